# ruff: noqa: B008, E501, UP035, UP045  (the programs are kept as their authors wrote them)
"""Extending PyTorch as tutorials and libraries do (see tests/pytorch_programs.py), each program run on chainrule and
on PyTorch and compared: values, gradients, printed text and errors. Custom operators (``torch.library``), after the
"Python custom operators" tutorial (and the C++ extension tutorial's mymuladd/mymul/myadd_out in Python, checked by
``opcheck`` over sample inputs): an op wrapping NumPy with ``register_fake``, ``register_autograd``
(``setup_context`` saving tensors and attributes), ``gradcheck`` and ``gradgradcheck`` through a backward of
differentiable ops, ``opcheck``; ops with two outputs and a float default; ``list[Tensor]``, ``Optional[Tensor]`` and
keyword-only arguments (``setup_context(ctx, inputs, keyword_only_inputs, output)``); an in-place op
(``mutates_args``) and ``opcheck`` without a fake function; ``infer_schema`` of every kind of argument; arguments
checked against the schema, with PyTorch's errors."""

from typing import Optional, Sequence

import numpy as np

from .probe13_extend_common import NS
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Custom operators: torch.library.custom_op
# ----------------------------------------------------------------------------------------------


def numpy_sin_tutorial(m):
    torch = m.torch

    @torch.library.custom_op(f"{NS}::numpy_sin", mutates_args=())
    def numpy_sin(x: torch.Tensor) -> torch.Tensor:
        x_np = x.cpu().numpy()
        y_np = np.sin(x_np)
        return torch.from_numpy(y_np).to(device=x.device)

    @numpy_sin.register_fake
    def _(x):
        return torch.empty_like(x)

    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)

    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos()

    numpy_sin.register_autograd(backward, setup_context=setup_context)

    x = torch.tensor([0.1, 0.5, 1.2, -2.0], dtype=torch.float64, requires_grad=True)
    y = numpy_sin(x)
    y.sum().backward()
    ok = torch.autograd.gradcheck(numpy_sin, (x,))
    ok2 = torch.autograd.gradgradcheck(numpy_sin, (x,))  # backward's own ops (cos, mul) are differentiated
    checks = torch.library.opcheck(numpy_sin, (torch.randn(3),))
    via_ops = getattr(torch.ops, NS).numpy_sin.default(x.detach())
    return dict(y=y, grad=x.grad, ok=ok, ok2=ok2, via_ops=via_ops,
                checks=str(checks),
                node=type(y.grad_fn).__name__, op=str(getattr(torch.ops, NS).numpy_sin.default))


def test_numpy_sin_operator_from_the_tutorial():
    ours, _ = run_both(numpy_sin_tutorial)
    np.testing.assert_allclose(ours["grad"], np.cos([0.1, 0.5, 1.2, -2.0]))
    assert ours["ok"] and ours["ok2"] and ours["node"] == f"GeneratedBackwardFor_{NS}_numpy_sin_defaultBackward"


def muladd_extension(m):
    """The C++ extension tutorial's operators (mymuladd, mymul, myadd_out), written in Python with NumPy."""
    torch = m.torch

    @torch.library.custom_op(f"{NS}::mymuladd", mutates_args=())
    def mymuladd(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
        return torch.from_numpy(a.numpy() * b.numpy() + c)

    @torch.library.custom_op(f"{NS}::mymul", mutates_args=())
    def mymul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(a.numpy() * b.numpy())

    @torch.library.custom_op(f"{NS}::myadd_out", mutates_args=("out",))
    def myadd_out(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        np.add(a.numpy(), b.numpy(), out=out.numpy())

    @torch.library.register_fake(f"{NS}::mymuladd")
    def _(a, b, c):
        torch._check(a.shape == b.shape)
        torch._check(a.dtype == torch.float)
        torch._check(b.dtype == torch.float)
        return torch.empty_like(a)

    @torch.library.register_fake(f"{NS}::mymul")
    def _(a, b):
        return torch.empty_like(a)

    def _backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a, grad_b = None, None
        if ctx.needs_input_grad[0]:
            grad_a = getattr(torch.ops, NS).mymul.default(grad, b)
        if ctx.needs_input_grad[1]:
            grad_b = getattr(torch.ops, NS).mymul.default(grad, a)
        return grad_a, grad_b, None

    def _setup_context(ctx, inputs, output):
        a, b, c = inputs
        saved_a, saved_b = None, None
        if ctx.needs_input_grad[0]:
            saved_b = b
        if ctx.needs_input_grad[1]:
            saved_a = a
        ctx.save_for_backward(saved_a, saved_b)

    torch.library.register_autograd(f"{NS}::mymuladd", _backward, setup_context=_setup_context)

    rng = np.random.default_rng(0)

    def make_tensor(*size, requires_grad=False):
        return torch.tensor(rng.standard_normal(size).astype(np.float32), requires_grad=requires_grad)

    samples = [[make_tensor(3, requires_grad=True), make_tensor(3, requires_grad=True), 1],
               [make_tensor(20, requires_grad=True), make_tensor(20, requires_grad=True), 3.14],
               [make_tensor(20, requires_grad=True), make_tensor(20), -123]]
    results = []
    for args in samples:
        results.append(str(torch.library.opcheck(getattr(torch.ops, NS).mymuladd.default, args)))
        result = getattr(torch.ops, NS).mymuladd(*args)
        result.sum().backward()
        results += [result, args[0].grad, args[1].grad]
    out = torch.empty(20)
    myadd_out(samples[1][0].detach(), samples[1][1].detach(), out)
    results.append(out)
    results.append(str(torch.library.opcheck(myadd_out, (make_tensor(4), make_tensor(4), torch.empty(4)))))
    return results


def test_the_extension_tutorials_muladd_operators():
    ours, _ = run_both(muladd_extension)
    assert ours[0] == str(dict.fromkeys(("test_schema", "test_autograd_registration", "test_faketensor",
                                         "test_aot_dispatch_dynamic"), "SUCCESS"))
    assert ours[-3] is None  # (b required no grad in the third sample)


def two_outputs(m):
    torch = m.torch

    @torch.library.custom_op(f"{NS}::sincos", mutates_args=())
    def sincos(x: torch.Tensor, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
        a = x.numpy()
        return torch.from_numpy(np.sin(a) * scale), torch.from_numpy(np.cos(a))

    def setup_context(ctx, inputs, output):
        x, scale = inputs  # (the default is filled in)
        ctx.scale = scale
        ctx.save_for_backward(x)

    def backward(ctx, grad_sin, grad_cos):
        (x,) = ctx.saved_tensors
        return grad_sin * x.cos() * ctx.scale - grad_cos * x.sin(), None

    sincos.register_autograd(backward, setup_context=setup_context)
    x = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64, requires_grad=True)
    s, c = sincos(x, 3.0)
    (s * c).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    s2, c2 = sincos(x)
    s2.sum().backward()
    return s, c, g1, s2, x.grad, torch.autograd.gradcheck(lambda t: sincos(t, 0.5), (x,))


def test_an_operator_with_two_outputs_and_a_float_default():
    ours, _ = run_both(two_outputs)
    x = np.array([0.3, -0.7, 1.1])
    np.testing.assert_allclose(ours[2], 3 * np.cos(x) ** 2 - 3 * np.sin(x) ** 2)
    np.testing.assert_allclose(ours[4], 2 * np.cos(x))


def list_optional_keyword_only(m):
    torch = m.torch

    @torch.library.custom_op(f"{NS}::weighted_sum", mutates_args=())
    def weighted_sum(xs: list[torch.Tensor], w: Optional[torch.Tensor] = None, *, bias: float = 0.0) -> torch.Tensor:
        stacked = np.stack([x.numpy() for x in xs])
        if w is not None:
            stacked = stacked * w.numpy()[:, None]
        return torch.from_numpy(stacked.sum(0) + bias)

    seen = []

    def setup_context(ctx, inputs, keyword_only_inputs, output):
        xs, w = inputs
        seen.append((len(inputs), sorted(keyword_only_inputs.items()), [type(v).__name__ for v in inputs]))
        ctx.n = len(xs)
        ctx.save_for_backward(*xs, w)

    def backward(ctx, grad):
        saved = ctx.saved_tensors
        xs, w = saved[:ctx.n], saved[ctx.n]
        seen.append(str(ctx.needs_input_grad))
        return [grad * w[i] for i in range(ctx.n)], torch.stack([(grad * x).sum() for x in xs])

    weighted_sum.register_autograd(backward, setup_context=setup_context)
    a = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([3.0, -1.0], dtype=torch.float64)
    w = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    y = weighted_sum([a, b], w, bias=1.5)
    y.pow(2).sum().backward()
    plain = weighted_sum([a.detach(), b])
    checks = torch.library.opcheck(weighted_sum, ([a, b], w), {"bias": 0.5},
                                   test_utils=("test_schema", "test_autograd_registration"))
    schema = torch.library.infer_schema(weighted_sum._init_fn, mutates_args=())
    return y, plain, a.grad, w.grad, str(seen), str(checks), schema


def test_list_optional_and_keyword_only_arguments_reach_setup_context_as_pytorch_gives_them():
    ours, _ = run_both(list_optional_keyword_only)
    assert ours[4].startswith("[(2, [('bias', 1.5)], ['list', 'Tensor']), '([True, False], True)'")
    np.testing.assert_allclose(ours[0], [0.5 * 1 + 2 * 3 + 1.5, 0.5 * 2 - 2 + 1.5])


def in_place_operator(m):
    torch = m.torch

    @torch.library.custom_op(f"{NS}::add_k_", mutates_args={"x"})
    def add_k_(x: torch.Tensor, k: int = 1) -> None:
        view = x.numpy()
        view += k

    x = torch.zeros(3)
    add_k_(x)
    add_k_(x, k=3)
    getattr(torch.ops, NS).add_k_.default(x, 2)
    checks = torch.library.opcheck(add_k_, (torch.zeros(2),))  # (nothing returned: no fake function needed)

    @torch.library.custom_op(f"{NS}::numpy_scale_", mutates_args={"x"})
    def numpy_scale_(x: torch.Tensor, k: float) -> None:
        view = x.numpy()
        view *= k  # (through NumPy: no tensor operation sees the write)

    base = torch.ones(4)
    before = base._version
    numpy_scale_(base[:2], 3.0)  # (a view's write is its base's)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    h = torch.ones(2) * 3
    loss = (w * h).sum()  # (h saved for backward)
    numpy_scale_(h, 5.0)
    try:
        loss.backward()
        error = None
    except RuntimeError as e:
        error = str(e)[:84]
    return x, str(checks), base, base._version - before, error


def test_in_place_operator_and_its_opcheck_without_a_fake_function():
    ours, _ = run_both(in_place_operator)
    assert ours[0].tolist() == [6.0, 6.0, 6.0] and ours[3] == 1
    assert ours[4].startswith("one of the variables needed for gradient computation has been modified")


def schemas(m):
    torch = m.torch

    def f(x: torch.Tensor, y: torch.Tensor, n: int = 2, eps: float = 1e-5, flag: bool = True, mode: str = "sum", *,
          z: torch.Tensor, dims: Sequence[int] = None, w: Optional[torch.Tensor] = None,
          d: torch.device = torch.device("cpu"), dt: torch.dtype = torch.float32) -> tuple[torch.Tensor]:
        pass

    def g(x: torch.Tensor, s: Optional[Sequence[int]] = None, r: Optional[int | float | bool] = 1.5,
          ys: list[Optional[torch.Tensor]] = None) -> tuple[torch.Tensor, int, float]:
        pass

    def no_return(x: torch.Tensor):
        pass

    def bad_default(x: torch.Tensor, dims: Sequence[int] = ()) -> torch.Tensor:
        pass

    out = [torch.library.infer_schema(f, mutates_args=("y", "z")), torch.library.infer_schema(f, mutates_args="unknown"),
           torch.library.infer_schema(g, mutates_args=()), torch.library.infer_schema(g, mutates_args=(), op_name="g")]
    for fn, mutates in [(no_return, ()), (bad_default, ()), (g, ("q",)), (g, ("s",))]:
        try:
            torch.library.infer_schema(fn, mutates_args=mutates)
        except ValueError as e:
            out.append(str(e).split(" Got func")[0])
    return out


def test_infer_schema_names_alias_sets_by_position_and_words_errors_as_pytorch():
    ours, _ = run_both(schemas)
    assert ours[0] == ('(Tensor x, Tensor(a1!) y, SymInt n=2, float eps=1e-05, bool flag=True, str mode="sum", *, '
                       'Tensor(a6!) z, SymInt[] dims=None, Tensor? w=None, Device d="cpu", ScalarType dt=float32) '
                       '-> ((Tensor))')


def argument_checks_and_errors(m):
    torch = m.torch

    @torch.library.custom_op(f"{NS}::scaled", mutates_args=())
    def scaled(x: torch.Tensor, k: float, n: int, mode: str = "a", dims: Optional[Sequence[int]] = None) -> torch.Tensor:
        return x * k * n

    out = [scaled(torch.ones(1), 2, True), scaled(torch.ones(1), torch.tensor(2.0), torch.tensor(3)),
           scaled(torch.ones(1), 1.5, 2, dims=(0, 1))]
    for args, kwargs in [((torch.ones(1), "s", 2), {}), ((torch.ones(1), 2.0, 2.5), {}), (([1.0], 2.0, 2), {}),
                         ((torch.ones(1), 2.0, 2), {"mode": 3}), ((torch.ones(1), 2.0, 2), {"dims": [1.0]}),
                         ((torch.ones(1), 2.0, 2), {"dims": 3})]:
        try:
            scaled(*args, **kwargs)
        except RuntimeError as e:
            out.append(str(e).split("\nDeclaration")[0])

    @torch.library.custom_op(f"{NS}::product", mutates_args=())
    def product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * y

    product.register_autograd(lambda ctx, grad: grad)  # (one gradient for two inputs)
    try:
        product(torch.ones(2, requires_grad=True), torch.ones(2)).sum().backward()
    except RuntimeError as e:
        out.append(str(e))

    @torch.library.custom_op(f"{NS}::writes", mutates_args=())
    def writes(x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x.clone()

    @torch.library.custom_op(f"{NS}::summed", mutates_args=())
    def summed(x: torch.Tensor) -> torch.Tensor:
        return x.sum(0)

    summed.register_fake(lambda x: x.new_empty(x.shape))
    @torch.library.custom_op(f"{NS}::no_formula", mutates_args=())
    def no_formula(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    no_formula.register_fake(lambda x: torch.empty_like(x))
    for op, test in [(writes, "test_schema"), (summed, "test_faketensor"), (no_formula, "test_aot_dispatch_dynamic"),
                     (writes, "test_aot_dispatch_dynamic")]:
        try:
            torch.library.opcheck(op, (torch.ones(2, 3, requires_grad=op is no_formula),), test_utils=test)
        except Exception as e:
            out.append(f"{type(e).__name__}: {str(e)[:85]}")

    def optional_list(x: torch.Tensor, ys: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        pass

    try:
        torch.library.infer_schema(optional_list, mutates_args=())
    except ValueError as e:
        out.append(str(e).split(" has unsupported type")[0])
    try:
        @torch.library.custom_op(f"{NS}::kw_tensor", mutates_args=(), schema="(Tensor x, *, Tensor y) -> Tensor")
        def kw_tensor(x, *, y):
            return x + y
    except NotImplementedError as e:
        out.append(str(e))
    return out


def test_arguments_are_checked_against_the_schema_and_errors_are_pytorchs():
    ours, _ = run_both(argument_checks_and_errors)
    assert ours[3] == (f"{NS}::scaled() Expected a value of type 'float' for argument 'k' but instead found type "
                       "'str'.\nPosition: 1\nValue: 's'")
    assert "returned an incorrect number of gradients (expected 3, got 2)" in ours[9]
