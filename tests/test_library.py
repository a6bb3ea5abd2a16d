"""Custom operators (``autograd.library``, PyTorch's ``torch.library``): a function that leaves the library (here
through NumPy) made an operator with ``custom_op``, its derivative given by ``register_autograd``, its schema
read from its annotations, ``autograd.ops.<namespace>.<name>``, in-place operators, PyTorch's errors, and
``opcheck``. Each test runs on PyTorch too, against the same expectations."""

import numpy as np
import pytest


def numpy_sin_op(T, name):
    @T.library.custom_op(f"chainrule_tests::{name}", mutates_args=())
    def numpy_sin(x: T.Tensor) -> T.Tensor:
        return T.from_numpy(np.sin(x.numpy(force=True)))

    return numpy_sin


def with_derivative(op):
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)

    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos()

    op.register_autograd(backward, setup_context=setup_context)
    return op


def test_an_operator_runs_its_function_and_differentiates_by_its_formula(T):
    op = numpy_sin_op(T, "sin_a")
    x = T.tensor([0.5, 1.0, 2.0], dtype=T.float64, requires_grad=True)
    y = op(x)
    np.testing.assert_allclose(y.detach().numpy(), np.sin([0.5, 1.0, 2.0]))
    assert type(y.grad_fn).__name__ == "GeneratedBackwardFor_chainrule_tests_sin_a_defaultBackward"
    with pytest.raises(RuntimeError, match="no autograd formula was registered. Please use register_autograd"):
        y.sum().backward()
    with_derivative(op)
    op(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.cos([0.5, 1.0, 2.0]))
    assert T.autograd.gradcheck(op, (T.tensor([0.3, -1.2], dtype=T.float64, requires_grad=True),))
    with T.no_grad():
        assert op(x).grad_fn is None


def test_the_operator_is_in_ops_by_its_namespace(T):
    op = with_derivative(numpy_sin_op(T, "sin_b"))
    x = T.tensor([0.25, 1.5])
    packet = T.ops.chainrule_tests.sin_b
    assert str(packet) == "chainrule_tests.sin_b" and str(packet.default) == "chainrule_tests.sin_b.default"
    assert repr(packet) == "<OpOverloadPacket(op='chainrule_tests.sin_b')>" and packet.default.overloadpacket is packet
    np.testing.assert_allclose(packet(x).numpy(), op(x).numpy())
    np.testing.assert_allclose(packet.default(x).numpy(), np.sin([0.25, 1.5]), rtol=1e-6)
    assert T.ops.aten.add.Tensor(T.ones(2), T.ones(2)).tolist() == [2.0, 2.0]
    assert T.ops.aten.mm.default(T.ones(1, 2), T.ones(2, 1)).tolist() == [[2.0]]


def test_several_outputs_non_tensor_arguments_and_their_gradients(T):
    @T.library.custom_op("chainrule_tests::scaled_pair", mutates_args=())
    def scaled_pair(x: T.Tensor, k: int = 2) -> tuple[T.Tensor, T.Tensor]:
        return x * k, x + k

    def setup_context(ctx, inputs, output):
        ctx.k = inputs[1]

    scaled_pair.register_autograd(lambda ctx, ga, gb: (ga * ctx.k + gb, None), setup_context=setup_context)
    x = T.ones(2, requires_grad=True)
    a, b = scaled_pair(x, 5)
    assert a.tolist() == [5.0, 5.0] and b.tolist() == [6.0, 6.0]
    (a.sum() + 2 * b.sum()).backward()
    assert x.grad.tolist() == [7.0, 7.0]
    assert scaled_pair(T.ones(1), k=3)[0].tolist() == [3.0]


def test_an_operator_that_writes_its_argument(T):
    @T.library.custom_op("chainrule_tests::fill_", mutates_args=("x",))
    def fill_(x: T.Tensor, value: float) -> None:
        x.fill_(value)

    t = T.zeros(2)
    assert fill_(t, 2.5) is None and t.tolist() == [2.5, 2.5]
    assert T.library.opcheck(fill_, (T.zeros(3), 1.0), test_utils="test_schema") == {"test_schema": "SUCCESS"}


def test_errors_are_pytorchs(T):
    op = numpy_sin_op(T, "sin_c")
    with pytest.raises(RuntimeError, match=r"expected at most 1 argument\(s\) but received 2 argument\(s\). "
                                           r"Declaration: chainrule_tests::sin_c\(Tensor x\) -> Tensor"):
        op(T.ones(2), 3)
    with pytest.raises(RuntimeError, match="is missing value for argument 'x'"):
        op()
    with pytest.raises(ValueError, match="Parameter x must have a type annotation"):
        T.library.custom_op("chainrule_tests::untyped", lambda x: x, mutates_args=())

    @T.library.custom_op("chainrule_tests::same", mutates_args=())
    def same(x: T.Tensor) -> T.Tensor:
        return x

    with pytest.raises(RuntimeError, match="must not also be an input to this custom operator"):
        same(T.ones(2))


def test_schemas_are_inferred_from_annotations(T):
    from collections.abc import Sequence

    def f(x: T.Tensor, box: Sequence[int], ts: list[T.Tensor], y: T.Tensor | None = None, s: float = 1.0,
          flag: bool = False, name: str = "a", n: int = 3) -> tuple[T.Tensor, T.Tensor]:
        raise AssertionError("not called")

    assert T.library.infer_schema(f, mutates_args=()) == (
        '(Tensor x, SymInt[] box, Tensor[] ts, Tensor? y=None, float s=1.0, bool flag=False, str name="a", '
        'SymInt n=3) -> (Tensor, Tensor)')

    def g(x: T.Tensor, y: T.Tensor, *, k: int) -> None:
        raise AssertionError("not called")

    assert T.library.infer_schema(g, mutates_args=("x",)) == "(Tensor(a0!) x, Tensor y, *, SymInt k) -> ()"
    assert T.library.infer_schema(g, mutates_args="unknown") == "(Tensor(a0!) x, Tensor(a1!) y, *, SymInt k) -> ()"


def test_opcheck_checks_the_formula_and_the_fake_function(T):
    op = numpy_sin_op(T, "sin_d")
    x = T.tensor([0.5, 1.0], requires_grad=True)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    failing = T.library.opcheck(op, (x,), test_utils=tests, raise_exception=False)
    assert failing["test_schema"] == failing["test_autograd_registration"] == "SUCCESS"
    assert failing["test_faketensor"] != "SUCCESS"  # (no fake function registered)
    with_derivative(op)
    op.register_fake(lambda x: T.empty_like(x))
    assert T.library.opcheck(op, (x,), test_utils=tests) == dict.fromkeys(tests, "SUCCESS")


def test_keyword_only_arguments_go_to_setup_context_apart(T):
    @T.library.custom_op("chainrule_tests::shifted", mutates_args=())
    def shifted(x: T.Tensor, y: T.Tensor | None = None, *, shift: float = 1.0, scale: float = 2.0) -> T.Tensor:
        return x * scale + shift

    seen = []

    def setup_context(ctx, inputs, keyword_only_inputs, output):
        seen.append((len(inputs), keyword_only_inputs))
        ctx.scale = keyword_only_inputs["scale"]

    shifted.register_autograd(lambda ctx, grad: (grad * ctx.scale, None), setup_context=setup_context)
    x = T.ones(2, requires_grad=True)
    shifted(x, scale=3.0).sum().backward()
    assert seen == [(2, {"shift": 1.0, "scale": 3.0})] and x.grad.tolist() == [3.0, 3.0]
    with pytest.raises(NotImplementedError, match=r"custom_op with kwarg-only Tensor args. Please make your tensors "
                                                  r"not kwarg-only. Got: kw\(Tensor x, \*, Tensor y\) -> Tensor"):
        T.library.custom_op("chainrule_tests::kw", lambda x, *, y: x, mutates_args=(),
                            schema="(Tensor x, *, Tensor y) -> Tensor")


def test_lists_of_tensors_in_and_out_are_differentiated_tensor_by_tensor(T):
    @T.library.custom_op("chainrule_tests::scaled_each", mutates_args=())
    def scaled_each(xs: list[T.Tensor], k: float) -> list[T.Tensor]:
        return [x * k for x in xs]

    def setup_context(ctx, inputs, output):
        ctx.k = inputs[1]

    def backward(ctx, grads):
        assert ctx.needs_input_grad == ([True, False], False)
        return [g * ctx.k if g is not None else None for g in grads], None

    scaled_each.register_autograd(backward, setup_context=setup_context)
    a, b = T.ones(2, requires_grad=True), T.ones(3)
    ya, yb = scaled_each([a, b], 4.0)
    assert ya.grad_fn is not None and ya.tolist() == [4.0, 4.0] and yb.tolist() == [4.0] * 3
    (ya * T.tensor([1.0, 2.0])).sum().backward()
    assert a.grad.tolist() == [4.0, 8.0]


def test_alias_sets_are_named_by_position_and_devices_quoted(T):
    cpu = T.device("cpu")

    def f(x: T.Tensor, n: int, y: T.Tensor, d: T.device = cpu) -> tuple[T.Tensor]:
        raise AssertionError("not called")

    assert T.library.infer_schema(f, mutates_args=("y",)) == (
        '(Tensor x, SymInt n, Tensor(a2!) y, Device d="cpu") -> ((Tensor))')
    with pytest.raises(ValueError, match="No return type annotation was provided. Please add one."):
        T.library.infer_schema(_no_return(T), mutates_args=())


def _no_return(T):
    def f(x: T.Tensor):
        raise AssertionError("not called")

    return f


def test_opcheck_makes_the_fake_function_of_an_operator_that_only_writes(T):
    @T.library.custom_op("chainrule_tests::double_", mutates_args=("x",))
    def double_(x: T.Tensor) -> None:
        x.mul_(2)

    assert T.library.opcheck(double_, (T.ones(2),), test_utils="test_faketensor") == {"test_faketensor": "SUCCESS"}


def test_library_define_and_impl(T):
    lib = T.library.Library("chainrule_tests_lib", "FRAGMENT")
    assert lib.define("scale(Tensor x, float k=2.0, *, bool negate=False) -> Tensor") == "scale"
    lib.impl("scale", lambda x, k=2.0, *, negate=False: x.detach() * (-k if negate else k), "CPU")
    scale = T.ops.chainrule_tests_lib.scale
    assert scale(T.ones(2), 3.0, negate=True).tolist() == [-3.0, -3.0] and scale.default(T.ones(1)).tolist() == [2.0]
    x = T.ones(2, requires_grad=True)
    with pytest.warns(UserWarning, match="an autograd kernel was not registered to the Autograd key"):
        scale(x).sum().backward()  # (no formula: a warning and no gradient, PyTorch's fallback)
    assert x.grad is None
    T.library.register_autograd("chainrule_tests_lib::scale", lambda ctx, grad: grad * 2)
    scale(x).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]

    T.library.define("chainrule_tests_lib::square", "(Tensor x) -> Tensor", lib=lib)
    T.library.impl("chainrule_tests_lib::square", "CompositeImplicitAutograd", lambda x: x * x, lib=lib)
    x.grad = None
    T.ops.chainrule_tests_lib.square(x * 3).sum().backward()  # (differentiated through its own operations)
    assert x.grad.tolist() == [18.0, 18.0]
    with pytest.raises(ValueError, match='expected schema to look like e.g. "\\(Tensor x\\) -> Tensor"'):
        T.library.define("chainrule_tests_lib::bad", "Tensor x -> Tensor")
    with pytest.raises(RuntimeError, match="with the same name and overload name multiple times"):
        lib.define("scale(Tensor x) -> Tensor")


def test_arguments_are_checked_against_the_schema(T):
    @T.library.custom_op("chainrule_tests::checked", mutates_args=())
    def checked(x: T.Tensor, k: float, n: int, dims: list[int] | None = None) -> T.Tensor:
        return x * k * n

    assert checked(T.ones(1), 2, True).tolist() == [2.0]  # (an int for a float, a bool for an int)
    assert checked(T.ones(1), T.tensor(2.0), T.tensor(3)).tolist() == [6.0]  # (one-element tensors for numbers)
    with pytest.raises(RuntimeError, match=r"chainrule_tests::checked\(\) Expected a value of type 'int' for argument "
                                           r"'n' but instead found type 'float'.\nPosition: 2\nValue: 2.5"):
        checked(T.ones(1), 1.0, 2.5)
    with pytest.raises(RuntimeError, match=r"Expected a value of type 'Optional\[List\[int\]\]' for argument 'dims'"):
        checked(T.ones(1), 1.0, 2, dims=[0.5])
    with pytest.raises(RuntimeError, match="Expected a value of type 'Tensor' for argument 'x' but instead found type "
                                           "'list'"):
        checked([1.0], 1.0, 2)


def test_opcheck_runs_pytorchs_four_tests_by_default(T):
    op = numpy_sin_op(T, "sin_e")
    op.register_fake(lambda x: T.empty_like(x))
    x = T.tensor([0.5, 1.0], requires_grad=True)
    with pytest.raises(Exception, match="test_aot_dispatch_dynamic failed with Trying to backward through "
                                        "chainrule_tests.sin_e.default but no autograd formula was registered"):
        T.library.opcheck(op, (x,), test_utils="test_aot_dispatch_dynamic")
    with_derivative(op)
    assert T.library.opcheck(op, (x,)) == dict.fromkeys(
        ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"), "SUCCESS")


def test_check_raises_pytorchs_error_of_each_kind(T):
    assert T._check(T.ones(2).shape == (2,)) is None
    with pytest.raises(RuntimeError, match=r"Expected cond to be True, but got False. \(Could this error message"):
        T._check(False)
    with pytest.raises(IndexError, match="^out of range$"):
        T._check_index(False, lambda: "out of range")
    with pytest.raises(ValueError):
        T._check_value(1 > 2)
    with pytest.raises(TypeError, match="cond must be a bool, but got a Tensor"):
        T._check(T.tensor(True))
    T._check_tensor_all(T.tensor([True, True]))


def test_an_argument_written_through_numpy_counts_one_write(T):
    @T.library.custom_op("chainrule_tests::numpy_double_", mutates_args=("x",))
    def numpy_double_(x: T.Tensor) -> None:
        view = x.numpy()
        view *= 2

    x = T.ones(2)
    numpy_double_(x)
    assert x._version == 1 and x.tolist() == [2.0, 2.0]
    w = T.ones(2, requires_grad=True)
    loss = (w * x).sum()
    numpy_double_(x)  # (x was saved for backward: its gradient would use the new values)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_aten_reaches_tensor_methods_and_private_softmax(T):
    a = T.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert T.ops.aten.view.default(a, [3, 2]).shape == (3, 2)
    assert T.ops.aten.expand.default(T.ones(1, 3), [2, 3]).shape == (2, 3)
    np.testing.assert_allclose(T.ops.aten._softmax.default(a, 1, False).numpy(), T.softmax(a, 1).numpy())
    np.testing.assert_allclose(T.ops.aten._log_softmax.default(a, 1, False).numpy(), T.log_softmax(a, 1).numpy())


def test_library_overloads_are_chosen_by_their_schemas(T):
    lib = T.library.Library("chainrule_tests_overloads", "FRAGMENT")
    assert lib.define("scale.Tensor(Tensor x, Tensor k) -> Tensor") == "scale"
    lib.define("scale.Scalar(Tensor x, float k) -> Tensor")
    lib.define("repeat(Tensor x, int n) -> Tensor")  # (int, as a schema written by hand says it)
    lib.impl("repeat", lambda x, n: x * n, "CompositeExplicitAutograd")
    with pytest.raises(RuntimeError, match="Expected a value of type 'int' for argument 'n' but instead found type "
                                           "'float'"):
        T.ops.chainrule_tests_overloads.repeat(T.ones(1), 2.5)
    lib.impl("scale.Tensor", lambda x, k: x * k, "CompositeExplicitAutograd")
    lib.impl("scale.Scalar", lambda x, k: x * k * 10, "CompositeExplicitAutograd")
    scale = T.ops.chainrule_tests_overloads.scale
    assert scale(T.ones(2), T.ones(2) * 2).tolist() == [2.0, 2.0] and scale(T.ones(2), 3.0).tolist() == [30.0, 30.0]
    assert sorted(scale.overloads()) == ["Scalar", "Tensor"]
    assert str(scale.Tensor) == "chainrule_tests_overloads.scale.Tensor"
    assert scale.Scalar.name() == "chainrule_tests_overloads::scale.Scalar"
    with pytest.raises(AttributeError, match="has no overload name 'default'"):
        getattr(scale, "default")  # noqa: B009
    with pytest.raises(RuntimeError, match="failed to match any schema:\n.*\nPosition: 1\nValue: 's'\nDeclaration: "
                                           r"chainrule_tests_overloads::scale.Tensor\(Tensor x, Tensor k\) -> Tensor"):
        scale(T.ones(2), "s")


def test_an_operator_that_writes_an_argument_takes_no_autograd_formula(T):
    @T.library.custom_op("chainrule_tests::count_", mutates_args={"counter"})
    def count_(x: T.Tensor, counter: T.Tensor) -> T.Tensor:
        counter.add_(1)
        return x * 2

    with pytest.raises(RuntimeError, match=r"Cannot register autograd formula for non-functional operator "
                                           r"<CustomOpDef\(chainrule_tests::count_\)> with schema chainrule_tests::"
                                           r"count_\(Tensor x, Tensor\(a1!\) counter\) -> Tensor. Please create a "
                                           "functional operator"):
        count_.register_autograd(lambda ctx, grad: (grad * 2, None))
    lib = T.library.Library("chainrule_tests_writes", "FRAGMENT")
    lib.define("f(Tensor(a!) x, Tensor y) -> Tensor")
    with pytest.raises(RuntimeError, match="non-functional operator chainrule_tests_writes.f.default with schema"):
        T.library.register_autograd("chainrule_tests_writes::f", lambda ctx, grad: (None, grad))
