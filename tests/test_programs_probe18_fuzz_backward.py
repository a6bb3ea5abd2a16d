"""Differential fuzzing of the state around the ops rather than their maths (op values and gradients are fuzzed in
tests/test_ops*.py and tests/test_fuzz*.py): the SAME small random program is built on chainrule and on PyTorch, and
the values, gradients, dtypes and shapes (and the class of any error) must agree (how: tests/probe18_fuzz_common.py).
``retain_graph``/``create_graph``/double backward through compositions of 2-4 ops, hooks returning a modified
gradient, ``retain_grad`` on views, ``backward``'s gradient and inputs, ``.grad`` accumulation, grad modes and
unrecorded writes; ``autograd.grad`` with ``allow_unused``, ``materialize_grads`` and ``is_grads_batched``."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn  # noqa: F401  (registers autograd.nn)

from .probe18_fuzz_common import FUZZ, TORCH, W0, _plain, agree, gradcheck, values

# -- retain_graph, create_graph, hooks, retain_grad -------------------------------------------------

COMPOSE = {
    "tanh": lambda T, y: y.tanh(),
    "sin_mul": lambda T, y: y.sin() * y,
    "matmul_t": lambda T, y: y @ y.t() / 4,
    "softmax": lambda T, y: y.softmax(-1) * 3,
    "exp_mean": lambda T, y: y.exp() - y.mean(0, keepdim=True),
    "square_view": lambda T, y: (y * y).view(y.shape),
    "hooked": lambda T, y: _hooked(y),
    "retained_view": lambda T, y: _retained(y[:, 1:]) * 1 + 0 * y[:, 1:].sum() if y.shape[1] > 1 else y,
    "cumsum": lambda T, y: y.cumsum(1),
    "pow_3": lambda T, y: y ** 3 / 3,
}


def _hooked(y):
    y = y * 1
    y.register_hook(lambda g: g * 2 + 1)  # a hook returning a modified gradient
    return y


def _retained(y):
    y.retain_grad()
    return y


@FUZZ
@given(ops=st.lists(st.sampled_from(sorted(COMPOSE)), min_size=2, max_size=4), seed=st.integers(0, 2**16),
       order=st.sampled_from(["retain_graph", "create_graph", "double_backward"]))
def test_compositions_backward_twice_and_of_second_order(ops, seed, order):
    rng = np.random.default_rng(seed)
    w0 = values(rng, (3, 3)) * 0.5

    def forward(T, w):
        y = w
        for name in ops:
            y = COMPOSE[name](T, y)
        return y

    def program(T):
        w = T.tensor(w0, requires_grad=True)
        y = forward(T, w)
        loss = (y * T.tensor(np.arange(y.numel()).reshape(y.shape) / 5.0)).sum()
        if order == "retain_graph":
            loss.backward(retain_graph=True)
            first = w.grad.clone()
            loss.backward()
            return first, w.grad
        if order == "create_graph":
            loss.backward(create_graph=True)
            g = w.grad
            return g, g.requires_grad, T.autograd.grad(g.pow(2).sum(), w)
        (g,) = T.autograd.grad(loss, w, create_graph=True)
        (h,) = T.autograd.grad((g * g.detach().cos()).sum(), w, retain_graph=True)
        return g, h

    agree(program, tolerance=1e-8)
    if TORCH is None and "hooked" not in ops and "retained_view" not in ops:
        gradcheck(lambda w: forward(autograd, w), w0)
        assert autograd.autograd.gradgradcheck(lambda w: forward(autograd, w),
                                               (autograd.tensor(w0, requires_grad=True),), atol=1e-5, rtol=1e-4)


def test_retain_grad_on_views_and_hooks():
    def program(T):
        w = T.tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
        h = w * 2
        row, col = h[1:], h.t()
        row.retain_grad()
        col.retain_grad()
        seen = []
        w.register_hook(lambda g: seen.append(g.clone()))
        w.register_hook(lambda g: g * 3)
        h.register_hook(lambda g: g + 1)
        (row.pow(2).sum() + (col * 3).sum()).backward()
        return w.grad, row.grad, col.grad, seen[0]

    w_grad, row_grad, col_grad, seen = agree(program)
    h = 2 * np.linspace(-1, 1, 12).reshape(3, 4)
    dh = np.full((3, 4), 3.0)
    dh[1:] += 2 * h[1:]
    np.testing.assert_allclose(row_grad[3], 2 * h[1:])
    np.testing.assert_allclose(col_grad[3], 3.0)
    np.testing.assert_allclose(seen[3], 2 * (dh + 1))
    np.testing.assert_allclose(w_grad[3], 6 * (dh + 1))


def test_retain_grad_of_a_view_written_in_place():
    """retain_grad() on a view, then an in-place write through it: the loss of the base leaves it no gradient."""
    def program(T):
        w = T.tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
        h = w * 2
        v = h[1:]
        v.retain_grad()
        v.mul_(3)
        h.pow(2).sum().backward()
        return w.grad, v.grad

    w_grad, v_grad = agree(program)
    h = 2 * np.linspace(-1, 1, 12).reshape(3, 4)
    h[1:] *= 3
    scale = np.ones((3, 4))
    scale[1:] = 3
    np.testing.assert_allclose(w_grad[3], 2 * h * scale * 2)
    assert v_grad is None  # (PyTorch's: the loss reads h, whose history no longer passes through v's new node)


def test_backward_twice_without_retain_graph_is_refused():
    def program(T):
        w = T.tensor([0.5, -1.0], requires_grad=True)
        y = (w.exp() * w).sum()
        y.backward()
        y.backward()

    if TORCH is None:
        with pytest.raises(RuntimeError):
            program(autograd)
    else:
        agree(program)


def _leaf(T, shape=(3, 4)):
    return T.tensor(np.linspace(-1, 1, int(np.prod(shape))).reshape(shape), requires_grad=True)


def _backward(y, **kwargs):
    y.backward(**kwargs)


# (program, its answer by NumPy from W0): hooks, retain_grad, backward's arguments, .grad accumulation
BACKWARD_PROGRAMS = {
    "retain_grad_then_hook": (
        lambda T: (lambda w: (lambda h: (h.retain_grad(), h.register_hook(lambda g: g * 2),
                                         _backward((h ** 2).sum()), h.grad, w.grad)[3:])(w * 2))(_leaf(T)),
        (8 * W0, 16 * W0)),  # retain_grad sees the hook's gradient (PyTorch 2 runs it last)
    "hook_then_retain_grad": (
        lambda T: (lambda w: (lambda h: (h.register_hook(lambda g: g * 2), h.retain_grad(),
                                         _backward((h ** 2).sum()), h.grad, w.grad)[3:])(w * 2))(_leaf(T)),
        (8 * W0, 16 * W0)),
    "hooks_run_in_order": (
        lambda T: (lambda w: (lambda h: (h.register_hook(lambda g: g + 1), h.register_hook(lambda g: g * 3),
                                         _backward(h.sum()), w.grad)[3:])(w * 2))(_leaf(T)),
        (np.full((3, 4), 12.0),)),
    "hook_on_a_tensor_used_twice": (
        lambda T: (lambda w: (lambda h: (h.register_hook(lambda g: g * 10), _backward((h * h + h).sum()),
                                         w.grad)[2:])(w * 2))(_leaf(T)),
        (20 * (4 * W0 + 1),)),
    "hook_runs_under_autograd_grad": (
        lambda T: (lambda w: (lambda h, calls: (h.register_hook(lambda g: calls.append(1) or g * 2),
                                                T.autograd.grad(h.sum(), w)[0], len(calls), w.grad)[1:])(
            w * 3, []))(_leaf(T)),
        (np.full((3, 4), 6.0), 1, None)),
    "leaf_hook_under_autograd_grad": (
        lambda T: (lambda w, calls: (w.register_hook(lambda g: calls.append(1) or g * 2),
                                     T.autograd.grad((w * 3).sum(), w)[0], len(calls), w.grad)[1:])(_leaf(T), []),
        (np.full((3, 4), 6.0), 1, None)),
    "hook_of_an_input_of_autograd_grad": (
        lambda T: (lambda w: (lambda h, calls: (h.register_hook(lambda g: calls.append(1) or g * 2),
                                                T.autograd.grad((h * 2).sum(), h)[0], len(calls))[1:])(
            w * 3, []))(_leaf(T)),
        (np.full((3, 4), 4.0), 1)),
    "retained_grad_accumulates": (
        lambda T: (lambda w: (lambda h: (lambda y: (h.retain_grad(), _backward(y, retain_graph=True), _backward(y),
                                                    h.grad)[3:])((h ** 2).sum()))(w * 3))(_leaf(T)),
        (12 * W0,)),
    "autograd_grad_fills_a_retained_grad": (
        lambda T: (lambda w: (lambda h: (h.retain_grad(), T.autograd.grad((h ** 2).sum(), w), h.grad)[2:])(w * 3))(
            _leaf(T)),
        (6 * W0,)),  # (PyTorch's autograd.grad fills retained grads too)
    "retain_grad_of_an_expand": (
        lambda T: (lambda w: (lambda e: (e.retain_grad(), _backward((e * T.tensor(W0)).sum()), e.grad, w.grad)[2:])(
            w.expand(3, 4)))(_leaf(T, (3, 1))),
        (W0, W0.sum(1, keepdims=True))),
    "backward_with_a_gradient": (
        lambda T: (lambda w: (_backward(w * 2, gradient=T.full((3, 4), 0.5, dtype=T.float64)), w.grad)[1:])(
            _leaf(T)), (np.ones((3, 4)),)),
    "autograd_backward_of_two_outputs": (
        lambda T: (lambda w: (T.autograd.backward([w * 2, w.sum() * 3], [T.ones(3, 4, dtype=T.float64), None]),
                              w.grad)[1:])(_leaf(T)), (np.full((3, 4), 5.0),)),
    "float32_leaf_in_a_float64_graph": (
        lambda T: (lambda w: (_backward((w.double() ** 2).sum()), w.grad)[1:])(
            T.tensor(W0, dtype=T.float32, requires_grad=True)), ((2 * W0).astype(np.float32),)),
    "accumulates_into_a_grad_set_by_hand": (
        lambda T: (lambda w, g0: (setattr(w, "grad", g0), _backward((w * 2).sum()), w.grad, g0)[2:])(
            _leaf(T), T.ones(3, 4, dtype=T.float64)), (np.full((3, 4), 3.0), np.full((3, 4), 3.0))),
    "create_graph_grad_accumulates_out_of_place": (
        lambda T: (lambda w: (_backward((w ** 3).sum(), create_graph=True), w.grad * 1,
                              _backward((w ** 2).sum(), create_graph=True), w.grad)[1::2])(_leaf(T)),
        (3 * W0 ** 2, 3 * W0 ** 2 + 2 * W0)),
    "grad_outputs_of_a_transpose": (
        lambda T: (lambda w: T.autograd.grad(w.exp(), w, T.tensor(W0.T.copy()).t()))(_leaf(T)),
        (np.exp(W0) * W0,)),
    "grad_outputs_expanded": (
        lambda T: (lambda w: T.autograd.grad(w.exp(), w, T.ones(1, 4, dtype=T.float64).expand(3, 4)))(_leaf(T)),
        (np.exp(W0),)),
    "grad_outputs_that_require_grad": (
        lambda T: (lambda w, v: (lambda g: (g, *T.autograd.grad(g.sum(), [w, v])))(
            T.autograd.grad(w.exp(), w, v, create_graph=True)[0]))(_leaf(T), _leaf(T)),
        (np.exp(W0) * W0, np.exp(W0) * W0, np.exp(W0))),
    "grad_outputs_with_a_none_for_a_scalar": (
        lambda T: (lambda w: T.autograd.grad([(w * 2).sum(), w * 3], [w], [None, T.ones(3, 4, dtype=T.float64)]))(
            _leaf(T)), (np.full((3, 4), 5.0),)),
    "batched_through_matmul_softmax": (
        lambda T: (lambda a: T.autograd.grad((a @ a.t()).softmax(-1).sum(-1), a, T.eye(3, dtype=T.float64),
                                             is_grads_batched=True))(_leaf(T)),
        (np.zeros((3, 3, 4)),)),  # (rows of a softmax sum to 1: no gradient)
    "batched_through_an_in_place_write": (
        lambda T: (lambda a: (lambda h: (h.__setitem__(0, a[1] ** 2), h.mul_(a), T.autograd.grad(
            h, a, T.eye(3, dtype=T.float64), is_grads_batched=True))[2])(a * 1))(_leaf(T, (3,))),
        (np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]),)),  # h = (a1² a0, a1², a2²) at a = (-1, 0, 1)
    "batched_then_retain_graph": (
        lambda T: (lambda a: (lambda y: (T.autograd.grad(y, a, T.eye(3, dtype=T.float64), is_grads_batched=True,
                                                         retain_graph=True)[0], T.autograd.grad(y.sum(), a)[0]))(
            a.exp()))(_leaf(T, (3,))),
        (np.diag(np.exp(np.linspace(-1, 1, 3))), np.exp(np.linspace(-1, 1, 3)))),
}


def _answer(result, expected, where):
    if expected is None or isinstance(expected, (bool, int)):
        assert result == expected, where
    else:
        np.testing.assert_allclose(np.asarray(result[3], dtype=np.float64), expected, rtol=1e-6, atol=1e-12,
                                   err_msg=where)


@pytest.mark.parametrize("name", sorted(BACKWARD_PROGRAMS))
def test_hooks_retain_grad_and_backward_arguments(name):
    program, expected = BACKWARD_PROGRAMS[name]
    result = agree(program)
    for i, (got, want) in enumerate(zip(result, expected)):
        _answer(got, want, f"{name}[{i}]")


def _no_grad(T, write):
    with T.no_grad():
        write()


# (program, its answer by hand): writes under no_grad into tensors of a graph, grad-mode nesting, .data, detach
GRAD_MODE_PROGRAMS = {
    "unrecorded_write_into_a_non_leaf": (
        lambda T: (lambda w: (lambda h: (_no_grad(T, lambda: h.add_(1)), h, T.autograd.grad((h * w).sum(), w)[0])[1:])(
            w * 2))(_leaf(T)), (2 * W0 + 1, 2 * W0 + 2 * W0 + 1)),  # d/dw of (h·w): h (as written) + w·dh/dw
    "unrecorded_write_through_a_view": (
        lambda T: (lambda w: (lambda h: (_no_grad(T, lambda: h[0].mul_(3)), h,
                                         T.autograd.grad((h * w).sum(), w)[0])[1:])(w * 2))(_leaf(T)),
        (2 * W0 * np.array([[3], [1], [1]]), 2 * W0 * np.array([[3], [1], [1]]) + 2 * W0)),
    "unrecorded_setitem_into_a_sum": (
        lambda T: (lambda w: (lambda h: (_no_grad(T, lambda: h.__setitem__(0, 0.0)), h,
                                         T.autograd.grad((h * 3).sum(), w)[0])[1:])(w + 1))(_leaf(T)),
        ((W0 + 1) * np.array([[0], [1], [1]]), np.full((3, 4), 3.0))),  # (the write is no part of the graph)
    "enable_grad_inside_no_grad": (
        lambda T: (lambda w: (lambda h: (h.requires_grad, (_no_grad(T, lambda: None), (h * 3).requires_grad)[1],
                                         T.autograd.grad(h.sum(), w)[0]))(_enabled(T, lambda: w * 2)))(_leaf(T)),
        (True, True, np.full((3, 4), 2.0))),
    "data_set_to_another_layout": (
        lambda T: (lambda w: (setattr(w, "data", w.data.t().contiguous()), _backward((w * 2).sum()), w, w.grad)[2:])(
            _leaf(T)), (W0.T, np.full((4, 3), 2.0))),
    "detach_then_requires_grad": (
        lambda T: (lambda w: (lambda d: (d.requires_grad_(), _backward((d * 3).sum()), d.grad, w.grad)[2:])(
            w.detach()))(_leaf(T)), (np.full((3, 4), 3.0), None)),
    "requires_grad_of_a_view_of_a_plain_tensor": (
        lambda T: (lambda x: (lambda v: (v.requires_grad_(), _backward((v * 3).sum()), v.grad, x.requires_grad)[2:])(
            x[0]))(T.tensor(W0)), (np.full(4, 3.0), False)),
    "setitem_of_a_requires_grad_value": (
        lambda T: (lambda x, w: (x.__setitem__(0, w), x.requires_grad, x.is_leaf,
                                 T.autograd.grad((x ** 2).sum(), w)[0])[1:])(T.tensor(W0), _leaf(T, (4,))),
        (True, False, 2 * np.linspace(-1, 1, 4))),
    "write_through_a_view_makes_a_sibling_require_grad": (
        lambda T: (lambda x, w: (lambda a, b: (b.mul_(w), a.requires_grad, T.autograd.grad(
            (a ** 2).sum() + (x ** 2).sum(), w)[0])[1:])(x[0], x[1:]))(T.tensor(W0), _leaf(T, (4,))),
        (True, 2 * (W0[1:] ** 2 * np.linspace(-1, 1, 4)).sum(0))),  # (a's history is replayed from the new base)
}


def _enabled(T, make):
    with T.no_grad():
        with T.enable_grad():
            return make()


@pytest.mark.parametrize("name", sorted(GRAD_MODE_PROGRAMS))
def test_grad_modes_and_unrecorded_writes(name):
    program, expected = GRAD_MODE_PROGRAMS[name]
    result = agree(program)
    for i, (got, want) in enumerate(zip(result, expected)):
        _answer(got, want, f"{name}[{i}]")


# -- autograd.grad: allow_unused, materialize_grads, is_grads_batched --------------------------------

GRAD_PROGRAMS = {
    "allow_unused": lambda T, a, b: T.autograd.grad((a * 2).sum(), [a, b], allow_unused=True),
    "unused_refused": lambda T, a, b: T.autograd.grad((a * 2).sum(), [a, b]),
    "materialize": lambda T, a, b: T.autograd.grad((a * 2).sum(), [a, b], materialize_grads=True),
    "materialize_without_allow": lambda T, a, b: T.autograd.grad((a * 2).sum(), [a, b], allow_unused=False,
                                                                materialize_grads=True),
    "batched": lambda T, a, b: T.autograd.grad(a.exp() * a, a, T.eye(3, dtype=T.float64), is_grads_batched=True),
    "batched_two_outputs": lambda T, a, b: T.autograd.grad(
        [T.outer(a.sin(), b), b * 2], [a, b],
        [T.ones(4, 3, 2, dtype=T.float64), T.arange(8.0, dtype=T.float64).view(4, 2)], is_grads_batched=True),
    "batched_unused_materialized": lambda T, a, b: T.autograd.grad(
        a * 2, [a, b], T.eye(3, dtype=T.float64), is_grads_batched=True, allow_unused=True, materialize_grads=True),
    "batched_create_graph": lambda T, a, b: (lambda g: (g, T.autograd.grad(g[0][0].sum(), a)))(
        T.autograd.grad(a ** 3, a, T.eye(3, dtype=T.float64), is_grads_batched=True, create_graph=True)),
    "nonscalar_without_grad_outputs": lambda T, a, b: T.autograd.grad(a * 2, a),
    "grad_outputs_of_another_shape": lambda T, a, b: T.autograd.grad(a * 2, a, T.ones(2, dtype=T.float64)),
    "grad_outputs_float32": lambda T, a, b: T.autograd.grad(a * 2, a, T.ones(3)),
    "a_non_leaf_input": lambda T, a, b: (lambda h: T.autograd.grad((h * h).sum(), [h, a]))(a.exp()),
    "create_graph_of_a_linear_function": lambda T, a, b: T.autograd.grad(
        T.autograd.grad((a * 2).sum(), a, create_graph=True)[0].sum(), a, allow_unused=True),
    "create_graph_unused_materialized": lambda T, a, b: T.autograd.grad(
        T.autograd.grad((a * 2).sum(), a, create_graph=True)[0].sum(), a, allow_unused=True, materialize_grads=True),
    "backward_inputs": lambda T, a, b: (lambda: ((a * b.sum()).sum().backward(inputs=[a]), a.grad, b.grad))(),
    "a_view_of_a_leaf_not_in_the_graph": lambda T, a, b: (lambda v: T.autograd.grad((a ** 2).sum(), v,
                                                                                     allow_unused=True))(a[1:]),
    "a_view_of_a_leaf_in_the_graph": lambda T, a, b: (lambda v: T.autograd.grad((v ** 2).sum() + a.sum(), [v, a]))(
        a[1:]),
    "the_same_input_twice": lambda T, a, b: T.autograd.grad((a ** 2).sum(), [a, a]),
    "an_output_among_the_inputs": lambda T, a, b: (lambda y: T.autograd.grad(y, [y, a]))((a ** 2).sum()),
    "two_outputs_sharing_a_node": lambda T, a, b: (lambda s: T.autograd.grad([s.sum(), (s * s).sum()], a))(a.sin()),
    "a_leaf_with_respect_to_itself": lambda T, a, b: T.autograd.grad(a, a, T.ones_like(a)),
    "a_tensor_written_after_use": lambda T, a, b: (lambda h: (lambda y: (h.add_(1), T.autograd.grad(
        y, h, allow_unused=True))[1])((h * 3).sum()))(a * 2),
}


@pytest.mark.parametrize("name", sorted(GRAD_PROGRAMS))
def test_autograd_grad_options(name):
    def program(T):
        a = T.tensor([0.5, -1.0, 2.0], dtype=T.float64, requires_grad=True)
        b = T.tensor([1.5, 0.25], dtype=T.float64, requires_grad=True)
        return GRAD_PROGRAMS[name](T, a, b)

    result = agree(program) if TORCH is not None else None
    if TORCH is None:
        try:
            result = _plain(program(autograd))
        except (RuntimeError, ValueError):
            assert name in ("unused_refused", "nonscalar_without_grad_outputs", "grad_outputs_of_another_shape",
                            "materialize_without_allow", "create_graph_of_a_linear_function",
                            "create_graph_unused_materialized")  # (the last two: a constant gradient has no graph)
            return
    a = np.array([0.5, -1.0, 2.0])
    if name == "batched":  # rows of the Jacobian: diag(exp(a)(1 + a))
        np.testing.assert_allclose(result[0][3], np.diag(np.exp(a) * (1 + a)))
    elif name == "materialize":
        assert result[1][3].tolist() == [0.0, 0.0]
    elif name == "allow_unused":
        assert result[1] is None
    elif name == "batched_create_graph":  # d/da of the first row of diag(3a²)
        np.testing.assert_allclose(result[1][0][3], [6 * a[0], 0, 0])
    elif name == "the_same_input_twice":
        for grad in result:
            np.testing.assert_allclose(grad[3], 2 * a)
    elif name == "two_outputs_sharing_a_node":  # cos a + 2 sin a cos a
        np.testing.assert_allclose(result[0][3], np.cos(a) + np.sin(2 * a))
    elif name == "a_tensor_written_after_use":  # (h is now its written value, which y never read)
        assert result == (None,)
