"""The ``nn.Module`` API itself, as real programs call it (not particular layers: see
test_nn_module_parity.py and test_moduledb.py): forward, backward and registration hooks with their
flags and order, and the errors. Each program runs on chainrule and, where installed, PyTorch, and the
results must agree; the values are also asserted without PyTorch. State dicts and the module plumbing:
test_programs_moduleapi_state.py."""

import warnings

import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _lists(grads):
    return [None if g is None else g.tolist() for g in grads]


# -- forward hooks ----------------------------------------------------------------------------------


def hook_order_and_flags(m):
    """prepend, with_kwargs, handles removed (twice) and used as context managers."""
    layer, log = m.nn.Linear(2, 2), []
    first = layer.register_forward_hook(lambda mod, a, o: log.append("f1"))
    front = layer.register_forward_hook(lambda mod, a, o: log.append("f0"), prepend=True)
    layer.register_forward_pre_hook(lambda mod, a: log.append("p1"))
    pre_front = layer.register_forward_pre_hook(lambda mod, a: log.append("p0"), prepend=True)
    layer.register_forward_hook(lambda mod, a, k, o: log.append(("fk", sorted(k))), with_kwargs=True, prepend=True)

    def pre_kwargs(mod, args, kwargs):
        log.append(("pk", len(args)))
        return args, kwargs

    layer.register_forward_pre_hook(pre_kwargs, with_kwargs=True)
    x = m.torch.ones(1, 2)
    layer(x)
    front.remove(), pre_front.remove(), front.remove()  # a second remove does nothing
    layer(x)
    with layer.register_forward_hook(lambda mod, a, o: log.append("ctx")) as handle:
        layer(x)
    layer(x)
    first.remove()
    return log, type(handle).__name__, len(layer._forward_hooks), len(layer._forward_pre_hooks)


def test_forward_hook_order_prepend_kwargs_and_handles():
    ours, _ = run_both(hook_order_and_flags)
    once = ["p1", ("pk", 1), ("fk", []), "f1"]
    assert ours == (["p0", *once[:2], ("fk", []), "f0", "f1", *once, *once, "ctx", *once],
                    "RemovableHandle", 1, 2)


def hooks_replacing_kwargs(m):
    class Scaled(m.nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    module = Scaled()
    module.register_forward_pre_hook(lambda mod, a, kw: (a, {"scale": kw["scale"] + 3.0}), with_kwargs=True)
    module.register_forward_hook(lambda mod, a, kw, out: out + kw["scale"], with_kwargs=True)
    plain = Scaled()
    plain.register_forward_pre_hook(lambda mod, a: a[0] * 10)  # one value, not a tuple: the new argument
    return module(m.torch.ones(2), scale=2.0), plain(m.torch.ones(2))


def test_pre_hooks_replace_args_and_kwargs():
    ours, _ = run_both(hooks_replacing_kwargs)
    assert ours[0].tolist() == [10.0, 10.0] and ours[1].tolist() == [10.0, 10.0]


def always_call_hooks(m):
    class Broken(m.nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    module, log = Broken(), []
    module.register_forward_hook(lambda mod, a, out: log.append(("always", out)), always_call=True)
    module.register_forward_hook(lambda mod, a, out: log.append("never"))
    module.register_forward_hook(lambda mod, a, kw, out: log.append(("kw", kw, out)), always_call=True,
                                 with_kwargs=True)
    try:
        module(m.torch.ones(1))
    except ValueError as error:
        log.append(str(error))
    return log


def test_always_call_forward_hooks_run_when_forward_raises():
    ours, _ = run_both(always_call_hooks)
    assert ours == [("always", None), ("kw", {}, None), "boom"]


def global_forward_hooks(m):
    registry, log = m.nn.modules.module, []
    net = m.nn.Sequential(m.nn.Linear(2, 2))
    net[0].register_forward_hook(lambda mod, a, o: log.append("own"))
    handles = [registry.register_module_forward_pre_hook(lambda mod, a: log.append(("pre", type(mod).__name__))),
               registry.register_module_forward_hook(lambda mod, a, o: log.append(("post", type(mod).__name__))),
               registry.register_module_forward_hook(lambda mod, a, k, o: log.append(("kw", k)), with_kwargs=True)]
    try:
        net(m.torch.ones(1, 2))
    finally:
        for handle in handles:
            handle.remove()
    net._call_impl(m.torch.ones(1, 2))  # the global hooks are gone; PyTorch's name for the call runs hooks
    return log


def test_global_module_hooks_run_before_each_modules_own():
    ours, _ = run_both(global_forward_hooks)
    assert ours == [("pre", "Sequential"), ("pre", "Linear"), ("post", "Linear"), ("kw", {}), "own",
                    ("post", "Sequential"), ("kw", {}), "own"]


# -- backward hooks ---------------------------------------------------------------------------------


def backward_hooks_several_inputs(m):
    """grad_input has one entry per positional input (zeros for a tensor not requiring grad); the
    pre-hook's replacement grad_output is what flows in; the hook's replacement grad_input is
    what the inputs receive."""

    class Two(m.nn.Module):
        def forward(self, a, b, c):
            return a * b * c, a + c

    module, log = Two(), []

    def hook(mod, grad_input, grad_output):
        log.append(("hook", _lists(grad_input), _lists(grad_output)))
        return grad_input[0] * 10, grad_input[1], None

    def pre_hook(mod, grad_output):
        log.append(("pre", _lists(grad_output)))
        return grad_output[0] * 2, grad_output[1]

    module.register_full_backward_hook(hook)
    module.register_full_backward_pre_hook(pre_hook)
    a = m.torch.tensor([1.0, 2.0], requires_grad=True)
    c = m.torch.tensor([5.0, 6.0], requires_grad=True)
    x, y = module(a, m.torch.tensor([3.0, 4.0]), c)
    (x.sum() + 3 * y.sum()).backward()
    return log, a.grad, c.grad


def test_full_backward_hooks_with_several_inputs_replace_gradients():
    ours, _ = run_both(backward_hooks_several_inputs)
    log, a_grad, c_grad = ours
    assert log == [("pre", [[1.0, 1.0], [3.0, 3.0]]),
                   ("hook", [[33.0, 51.0], [0.0, 0.0], [9.0, 19.0]], [[2.0, 2.0], [3.0, 3.0]])]
    assert a_grad.tolist() == [330.0, 510.0] and c_grad is None  # a None from the hook: no gradient


def backward_hook_order_and_globals(m):
    registry, log = m.nn.modules.module, []
    layer = m.nn.Linear(2, 1)
    layer.register_full_backward_hook(lambda mod, gi, go: log.append("h1"))
    layer.register_full_backward_hook(lambda mod, gi, go: log.append("h0"), prepend=True)
    layer.register_full_backward_pre_hook(lambda mod, go: log.append("p1"))
    layer.register_full_backward_pre_hook(lambda mod, go: log.append("p0"), prepend=True)
    handles = [registry.register_module_full_backward_pre_hook(lambda mod, go: log.append("global pre")),
               registry.register_module_full_backward_hook(lambda mod, gi, go: log.append(("global", len(gi))))]
    try:
        layer(m.torch.ones(1, 2, requires_grad=True)).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return log


def test_backward_hook_order_prepend_and_global_hooks():
    ours, _ = run_both(backward_hook_order_and_globals)
    assert ours == ["global pre", "p0", "p1", ("global", 1), "h0", "h1"]


def backward_hook_inputs_without_grad(m):
    layer, log = m.nn.Linear(2, 1), []
    layer.register_full_backward_hook(lambda mod, gi, go: log.append((gi, _lists(go))))
    layer(m.torch.ones(1, 2)).sum().backward()  # the parameters need grad, the input does not
    return log, layer.weight.grad


def test_backward_hook_on_an_input_not_requiring_grad_sees_none():
    ours, _ = run_both(backward_hook_inputs_without_grad)
    assert ours[0] == [((None,), [[[1.0]]])] and ours[1].tolist() == [[1.0, 1.0]]


def always_call_hook_raising(m):
    class Broken(m.nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    def hook(mod, args, out):
        raise KeyError("hook")

    module = Broken()
    module.register_forward_hook(hook, always_call=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            module(m.torch.ones(1))
        except ValueError as error:  # the forward's error, not the hook's
            raised = str(error)
    return raised, [str(w.message) for w in caught if "always_call" in str(w.message)]


def test_always_call_hook_that_raises_is_warned_and_forwards_error_raised():
    ours, _ = run_both(always_call_hook_raising)
    assert ours == ("boom", ["module forward hook with ``always_call=True`` raised an exception that was silenced "
                             "as another error was raised in forward: 'hook'"])


def backward_hooks_unused_output(m):
    class Two(m.nn.Module):
        def forward(self, a, b):
            return a * 2, a * 3

    module, log = Two(), []
    module.register_full_backward_pre_hook(lambda mod, go: log.append(("pre", _lists(go))))
    module.register_full_backward_hook(lambda mod, gi, go: log.append(("hook", _lists(gi), _lists(go))))
    a, b = m.torch.ones(1, requires_grad=True), m.torch.ones(1, requires_grad=True)
    x, y = module(a, b)
    x.sum().backward(retain_graph=True)
    y.sum().backward()
    return log, a.grad


def test_backward_hooks_show_none_for_an_output_no_gradient_reached():
    ours, _ = run_both(backward_hooks_unused_output)
    log, a_grad = ours
    assert log == [("pre", [[1.0], None]), ("hook", [[2.0], [0.0]], [[1.0], None]),  # b unused: zeros
                   ("pre", [None, [1.0]]), ("hook", [[3.0], [0.0]], [None, [1.0]])]
    assert a_grad.tolist() == [5.0]


def registration_hooks(m):
    registry, log = m.nn.modules.module, []

    def on_parameter(mod, name, param):
        log.append(("param", type(mod).__name__, name))

    def on_buffer(mod, name, buffer):
        log.append(("buffer", name, None if buffer is None else buffer.tolist()))
        return None if buffer is None else buffer + 1  # a returned value is what is registered

    def on_module(mod, name, sub):
        log.append(("module", name, type(sub).__name__))
        return m.nn.Tanh() if isinstance(sub, m.nn.ReLU) else None

    handles = [registry.register_module_parameter_registration_hook(on_parameter),
               registry.register_module_buffer_registration_hook(on_buffer),
               registry.register_module_module_registration_hook(on_module)]
    try:
        net = m.nn.Sequential(m.nn.Linear(2, 1), m.nn.ReLU())
        net.register_parameter("absent", None)  # no parameter hook for None
        net.register_buffer("count", m.torch.zeros(1))
        net.register_buffer("nothing", None)
        net.add_module("empty", None)
        net[0].weight = m.nn.Parameter(m.torch.zeros(1, 2))
        net.count = m.torch.ones(1)
    finally:
        for handle in handles:
            handle.remove()
    net.add_module("after", m.nn.ReLU())
    return log, repr(net), net.count


def test_global_registration_hooks_see_and_replace_what_modules_register():
    ours, _ = run_both(registration_hooks)
    log, text, count = ours
    assert log == [("param", "Linear", "weight"), ("param", "Linear", "bias"), ("module", "0", "Linear"),
                   ("module", "1", "ReLU"), ("buffer", "count", [0.0]), ("buffer", "nothing", None),
                   ("module", "empty", "NoneType"), ("param", "Linear", "weight"), ("buffer", "count", [1.0])]
    assert "(1): Tanh()\n  (empty): None\n  (after): ReLU()" in text and count.tolist() == [2.0]


# -- errors: the class of PyTorch's, and its message --------------------------------------------------


def _hooked(m, register, hook, needs_grad=True):
    layer = m.nn.Linear(2, 1)
    getattr(layer, register)(hook)
    layer(m.torch.ones(1, 2, requires_grad=needs_grad)).sum().backward()


def _assigned(m, first, second):
    module = m.nn.Module()
    module.p = first
    module.p = second


class _Empty:
    def __call__(self, m):
        type("Empty", (m.nn.Module,), {})()(m.torch.ones(1))


ERRORS = [
    (lambda m: _hooked(m, "register_full_backward_hook", lambda mod, gi, go: (gi[0], gi[0])), RuntimeError,
     "^Backward hook returned an invalid number of grad_input, got 2, but expected 1$"),
    (lambda m: _hooked(m, "register_full_backward_pre_hook", lambda mod, go: (go[0], go[0])), RuntimeError,
     "^Backward pre hook returned an invalid number of grad_output, got 2, but expected 1$"),
    (lambda m: m.nn.Linear(1, 1).train("yes"), ValueError, "^training mode is expected to be boolean$"),
    (lambda m: _assigned(m, m.nn.Parameter(m.torch.zeros(1)), m.torch.zeros(1)), TypeError,
     r"^cannot assign 'torch.FloatTensor' as parameter 'p' \(torch.nn.Parameter or None expected\)$"),
    (lambda m: m.nn.Module().register_parameter("w", m.torch.zeros(1, dtype=m.torch.float64)), TypeError,
     r"^cannot assign 'torch.DoubleTensor' object to parameter 'w'"),
    (lambda m: m.nn.Module().register_parameter("a.b", None), KeyError, "^'parameter name can.'t contain \"\\.\"'$"),
    (_Empty(), NotImplementedError, r'^Module \[Empty\] is missing the required "forward" function$'),
    (lambda m: m.nn.ModuleList([m.nn.ReLU()])[3], IndexError, "^index 3 is out of range$"),
    (lambda m: m.nn.Sequential()[0], IndexError, "^index 0 is out of range$"),
    (lambda m: m.nn.ModuleList([m.nn.ReLU()])["a"], TypeError, "cannot be interpreted as an integer"),
]


@pytest.mark.parametrize("program, kind, match", ERRORS, ids=range(len(ERRORS)))
def test_errors_as_pytorchs(program, kind, match):
    raises_alike(program, match, kind=kind)


def test_pre_hook_with_kwargs_returning_a_non_pair_is_refused():
    def program(m):
        layer = m.nn.Linear(2, 1)
        layer.register_forward_pre_hook(lambda mod, a, k: "bad", with_kwargs=True)
        layer(m.torch.ones(1, 2))

    raises_alike(program, r"forward pre-hook must return None or a tuple of \(new_args, new_kwargs\)",
                 kind=RuntimeError)


def backward_hooks_need_tensor_outputs(m):
    class Named(m.nn.Module):
        def forward(self, x):
            return {"y": x * 2}

    class Cube(m.nn.Module):
        def forward(self, x):
            return x ** 3

    named, cube, log = Named(), Cube(), []
    named.register_full_backward_hook(lambda mod, gi, go: log.append("dict"))
    cube.register_full_backward_hook(lambda mod, gi, go: log.append(("cube", _lists(gi), _lists(go))))
    x = m.torch.tensor([2.0], requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        named(x)["y"].sum().backward()
    said = [str(w.message) for w in caught if "backward hooks" in str(w.message)]
    grad, = m.torch.autograd.grad(cube(x).sum(), x, create_graph=True)
    grad.sum().backward()  # the second backward reaches the input, not through the output: no hook
    return log, said, x.grad


def test_full_backward_hooks_need_tensor_outputs_and_skip_double_backward():
    ours, _ = run_both(backward_hooks_need_tensor_outputs)
    log, said, grad = ours
    assert log == [("cube", [[12.0]], [[1.0]])] and grad.tolist() == [14.0]  # 2 + 6x
    assert said == ["For backward hooks to be called, module output should be a Tensor or a tuple of Tensors but "
                    "received <class 'dict'>"]
