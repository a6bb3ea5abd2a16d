"""PyTorch's semantics for the state around the ops: in-place writes, gradient storage,
grad mode and dtypes. Each case runs the same program on chainrule and, where it is
installed, on PyTorch, and compares values, gradients and dtypes."""

import threading

import numpy as np
import pytest

import autograd
from autograd import Tensor


def _torch():
    return pytest.importorskip("torch")


def _run_both(program):
    """program(lib) returns a dict of arrays; chainrule's must equal PyTorch's (where installed)
    and must equal the expected values the test gives."""
    ours = {k: np.asarray(v) for k, v in program(autograd).items()}
    try:
        import torch
    except ImportError:
        return ours
    theirs = {k: np.asarray(v) for k, v in program(torch).items()}
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6, atol=1e-7, err_msg=key)
        assert ours[key].dtype == theirs[key].dtype, (key, ours[key].dtype, theirs[key].dtype)
    return ours


def _np(t):
    return t.detach().numpy().copy()


# -- in-place writes are recorded ----------------------------------------------------------


def test_writing_a_grad_requiring_value_into_a_plain_tensor_records_it():
    def program(lib):
        w = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        acc = lib.zeros(3)
        acc += w * 2
        buf = lib.zeros(3)
        buf[0] = w[1]
        (acc.sum() + buf.sum() + (acc * buf).sum()).backward()
        return {"grad": _np(w.grad), "acc_requires_grad": np.array(acc.requires_grad)}

    out = _run_both(program)
    np.testing.assert_allclose(out["grad"], [2 + 2 * 2.0, 2 + 1 + 2 * 1.0, 2.0])  # L = Σ2w + w1 + 2 w0 w1


def test_residual_add_in_place_on_a_non_leaf_rebases_its_history():
    def program(lib):
        x = lib.tensor([0.5, -1.0, 2.0], requires_grad=True)
        h = x * 3
        h += h.tanh()
        h[1] -= 1
        h.relu_()
        h.sum().backward()
        return {"value": _np(h), "grad": _np(x.grad)}

    out = _run_both(program)
    x = np.array([0.5, -1.0, 2.0])
    before_relu = 3 * x + np.tanh(3 * x) - np.array([0, 1, 0])
    expected = (before_relu > 0) * (3 + 3 * (1 - np.tanh(3 * x) ** 2))
    np.testing.assert_allclose(out["grad"], expected, rtol=1e-6)


def test_a_write_through_a_view_updates_the_base():
    def program(lib):
        w = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        y = w * 1
        row = y[0]
        row.mul_(w[1])
        (y * y).sum().backward()
        return {"y": _np(y), "grad": _np(w.grad)}

    out = _run_both(program)
    np.testing.assert_allclose(out["y"], [[3.0, 8.0], [3.0, 4.0]])


def test_in_place_on_a_leaf_that_requires_grad_raises_pytorchs_error():
    w = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.add_(1)
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        w[0:1].mul_(2)
    with autograd.no_grad():
        w.add_(1)
    np.testing.assert_allclose(w.numpy(), [2.0, 3.0])


def test_only_saved_tensors_are_version_checked():
    def program(lib):
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        x = lib.tensor([3.0, 4.0])
        y = (w + x).sum()
        x.add_(1)  # add saved nothing: backward still works
        y.backward()
        return {"grad": _np(w.grad)}

    np.testing.assert_allclose(_run_both(program)["grad"], [1.0, 1.0])
    w = Tensor([1.0, 2.0], requires_grad=True)
    x = Tensor([3.0, 4.0])
    y = (w * x).sum()  # mul saved x
    x.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_an_add_chain_keeps_no_intermediate_arrays():
    import gc
    import weakref

    w = Tensor(np.ones(3), requires_grad=True)
    h = w + 1
    ref = weakref.ref(h)
    y = h + 2
    del h
    gc.collect()
    assert ref() is None  # Add kept only h's shape
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 1.0, 1.0])


# -- .data ---------------------------------------------------------------------------------


def test_data_is_a_detached_tensor_sharing_memory():
    def program(lib):
        p = lib.tensor([1.0, 2.0], requires_grad=True)
        (p * p).sum().backward()
        p.data += -0.1 * p.grad
        norm = p.data.norm() if hasattr(p.data, "norm") else (p.data * p.data).sum().sqrt()
        return {"p": _np(p), "norm": np.array(norm.item()), "grad_fn": np.array(p.data.grad_fn is None),
                "requires_grad": np.array(p.data.requires_grad)}

    out = _run_both(program)
    np.testing.assert_allclose(out["p"], [0.8, 1.6], rtol=1e-6)
    p = Tensor([1.0, 2.0], requires_grad=True)
    p.data = Tensor([5.0, 6.0])
    np.testing.assert_allclose(p.numpy(), [5.0, 6.0])
    p.data = Tensor([1.0, 2.0, 3.0])  # any shape, as PyTorch's (model surgery)
    assert p.shape == (3,) and p.requires_grad and p.is_leaf
    with pytest.raises(RuntimeError, match="must be floating point or complex"):
        p.data = autograd.tensor([1, 2, 3])


# -- type promotion ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["f32_i64", "i64_float", "i32_int", "bool_int", "f32_f64_0d", "i64_f64_0d",
                                  "int_div", "f32_pyfloat"])
def test_type_promotion_is_pytorchs(case):
    def program(lib):
        f32 = lib.tensor([1.5, 2.5], dtype=lib.float32)
        i64 = lib.tensor([1, 2], dtype=lib.int64)
        i32 = lib.tensor([1, 2], dtype=lib.int32)
        b = lib.tensor([True, False])
        f64_0d = lib.tensor(2.0, dtype=lib.float64)
        results = {"f32_i64": f32 * i64, "i64_float": i64 * 0.5, "i32_int": i32 + 3, "bool_int": b + 1,
                   "f32_f64_0d": f32 * f64_0d, "i64_f64_0d": i64 * f64_0d, "int_div": i64 / i64,
                   "f32_pyfloat": f32 * 1e-3}
        return {"value": results[case].numpy()}

    expected = {"f32_i64": "float32", "i64_float": "float32", "i32_int": "int32", "bool_int": "int64",
                "f32_f64_0d": "float32", "i64_f64_0d": "float64", "int_div": "float32", "f32_pyfloat": "float32"}
    assert str(_run_both(program)["value"].dtype) == expected[case]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_a_tensor_with_a_python_number_keeps_its_dtype_and_differentiates(dtype):
    """x * c, c * x, x + c, c + x, x - c, with c an int or a float: the number is a constant of
    the op (nothing saved), the result and the gradient keep x's floating dtype."""
    def program(lib):
        x = lib.tensor([0.5, -1.25, 3.0], dtype=getattr(lib, dtype), requires_grad=True)
        y = ((x * 2.5 + 3) * (2 * x) - (x - 0.75) * (1.5 + x)) * (x - 2)
        y.sum().backward()
        (g,) = lib.autograd.grad((x * 0.5 + 1).tanh().sum(), x, create_graph=True)
        (gg,) = lib.autograd.grad(g.sum(), x)
        out = {"y": _np(y), "grad": _np(x.grad), "gg": _np(gg)}
        if dtype == "float16":  # PyTorch's half tanh'' rounds differently (float32 inside): an ulp or two
            del out["gg"]
        return out

    out = _run_both(program)
    assert {str(v.dtype) for v in out.values()} == {dtype}
    x = np.array([0.5, -1.25, 3.0])
    np.testing.assert_allclose(out["y"], ((x * 2.5 + 3) * (2 * x) - (x - 0.75) * (1.5 + x)) * (x - 2),
                               rtol=2e-3 if dtype == "float16" else 1e-6)


def test_gradients_come_back_in_their_inputs_dtype():
    def program(lib):
        w = lib.tensor([1.0, 2.0], dtype=lib.float32, requires_grad=True)
        x = lib.tensor([3.0, 4.0], dtype=lib.float64)
        (w * x).sum().backward()
        return {"grad": _np(w.grad)}

    out = _run_both(program)
    assert out["grad"].dtype == np.float32
    np.testing.assert_allclose(out["grad"], [3.0, 4.0])


# -- gradient storage ----------------------------------------------------------------------


def test_a_create_graph_grad_accumulates_out_of_place():
    def program(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        (x ** 3).sum().backward(create_graph=True)
        first = x.grad
        (x ** 2).sum().backward(create_graph=True)
        return {"grad": _np(x.grad), "first": _np(first), "distinct": np.array(first is not x.grad)}

    out = _run_both(program)
    np.testing.assert_allclose(out["grad"], [3 + 2, 12 + 4])
    np.testing.assert_allclose(out["first"], [3, 12])


def test_retain_grad_accumulates_and_never_shares_a_leafs_buffer():
    def program(lib):
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        h = w + 0
        h.retain_grad()
        seen = []
        h.register_hook(lambda g: seen.append(g))
        y = h.sum()
        y.backward(retain_graph=True)
        y.backward()
        w.grad.mul_(10)  # changing a leaf's .grad must not change the retained grad or the hook's
        return {"h_grad": _np(h.grad), "w_grad": _np(w.grad), "hook": _np(seen[0])}

    out = _run_both(program)
    np.testing.assert_allclose(out["h_grad"], [2.0, 2.0])
    np.testing.assert_allclose(out["w_grad"], [20.0, 20.0])
    np.testing.assert_allclose(out["hook"], [1.0, 1.0])


def test_autograd_grad_runs_hooks_and_skips_unneeded_work():
    def program(lib):
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        v = lib.tensor([3.0, 4.0], requires_grad=True)
        w.register_hook(lambda g: g * 2)
        y = (w * v).sum()
        (gw,) = lib.autograd.grad(y, [w]) if lib is not autograd else autograd.grad(y, [w])
        return {"gw": _np(gw), "v_grad_none": np.array(v.grad is None)}

    np.testing.assert_allclose(_run_both(program)["gw"], [6.0, 8.0])


def test_autograd_grad_with_an_unused_leaf_among_the_outputs():
    w = Tensor([1.0, 2.0], requires_grad=True)
    other = Tensor([5.0], requires_grad=True)
    (g,) = autograd.grad([(w * w).sum(), other.sum()], [w])
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])


# -- grad mode -----------------------------------------------------------------------------


def test_grad_mode_is_per_thread():
    results = {}
    barrier = threading.Barrier(2)

    def in_no_grad():
        with autograd.no_grad():
            barrier.wait()
            barrier.wait()

    def recording():
        barrier.wait()
        x = Tensor([1.0], requires_grad=True)
        results["recorded"] = (x * 2).requires_grad
        barrier.wait()

    threads = [threading.Thread(target=in_no_grad), threading.Thread(target=recording)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["recorded"] is True


def test_set_grad_enabled_as_a_decorator_changes_nothing_until_called():
    @autograd.set_grad_enabled(False)
    def evaluate(x):
        assert not autograd.is_grad_enabled()
        return x * 2

    assert autograd.is_grad_enabled()
    assert evaluate(Tensor([1.0], requires_grad=True)).grad_fn is None
    assert autograd.is_grad_enabled()
    autograd.set_grad_enabled(False)
    assert not autograd.is_grad_enabled()
    autograd.set_grad_enabled(True)
    assert autograd.is_grad_enabled()


def test_a_recursive_no_grad_function_restores_grad_mode():
    @autograd.no_grad()
    def countdown(n):
        assert not autograd.is_grad_enabled()
        return 0 if n == 0 else countdown(n - 1)

    countdown(5)
    assert autograd.is_grad_enabled()
    with autograd.inference_mode():
        assert not autograd.is_grad_enabled()
    assert autograd.is_grad_enabled()


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["abc", None, {"a": 1}, np.array([object()])])
def test_tensor_of_something_that_is_not_numbers_raises(bad):
    with pytest.raises(TypeError, match="cannot make a tensor"):
        autograd.tensor(bad)


def test_version_counts_writes_shared_by_views_not_by_data():
    def program(lib):
        x = lib.ones(3)
        x.add_(1)
        x[0] = 2
        view = x[1:]
        view.mul_(2)
        return {"x": np.array(x._version), "view": np.array(view._version), "data": np.array(x.data._version),
                "detached": np.array(x.detach()._version)}

    out = _run_both(program)
    assert (int(out["x"]), int(out["view"]), int(out["data"]), int(out["detached"])) == (3, 3, 0, 3)


@pytest.mark.parametrize("call", [lambda lib: lib.tensor([1, 2]).mean(), lambda lib: lib.tensor([1]) // 0,
                                  lambda lib: lib.tensor([5]) % 0])
def test_integer_mean_and_integer_division_by_zero_raise_as_pytorch(call):
    with pytest.raises(RuntimeError):
        call(autograd)
    try:
        import torch
    except ImportError:
        return
    with pytest.raises(RuntimeError):
        call(torch)


def test_tensor_backward_with_inputs_fills_only_theirs():
    a = autograd.tensor([1.0, 2.0], requires_grad=True)
    b = autograd.tensor([3.0, 4.0], requires_grad=True)
    (a * b).sum().backward(inputs=[a])
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, 4.0])
    assert b.grad is None
    y = a * b
    (y * 2).sum().backward(inputs=y)  # a non-leaf input gets its .grad too
    np.testing.assert_array_equal(y.grad.numpy(), [2.0, 2.0])
    with pytest.raises(RuntimeError, match="cannot be empty"):
        (a * b).sum().backward(inputs=[])


def test_a_mode_decorator_on_a_generator_applies_at_each_step_and_not_between():
    w = autograd.ones(2, requires_grad=True)

    @autograd.no_grad()
    def sample(steps):
        for _ in range(steps):
            reply = yield (w * 2).requires_grad, autograd.is_grad_enabled()
            if reply is not None:
                yield reply
        return "done"

    steps = sample(2)
    assert next(steps) == (False, False) and autograd.is_grad_enabled()  # the caller records between steps
    assert steps.send("echo") == "echo" and next(steps) == (False, False)
    with pytest.raises(StopIteration) as finished:
        next(steps)
    assert finished.value.value == "done" and autograd.is_grad_enabled()
    steps = sample(3)
    next(steps)
    with pytest.raises(KeyError):
        steps.throw(KeyError("passed on to the generator"))
    assert [recorded for recorded, _ in sample(2)] == [False, False]
