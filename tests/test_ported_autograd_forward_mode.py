"""Forward-mode AD ported from PyTorch's test/test_autograd.py: the class TestAutogradForwardMode (dual levels,
packing and unpacking dual tensors, in-place writes and views, cleanup at the end of a level), the forward-mode
tests of custom Functions in TestAutograd (jvp, save_for_forward, non-differentiable outputs, the checks gradcheck
makes with check_forward_ad), and TestAutogradForwardModeBatchedGrad's gradcheck without vmap.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`); the tangents are
checked against analytic values. chainrule's own forward-mode tests are in tests/test_forward_ad.py.
"""

import functools
import gc
import importlib
import itertools
import weakref

import numpy as np
import pytest

from tests.ported import close, raises, same, values, xfail_ours


def _fwAD(T):
    return importlib.import_module(f"{T.__name__}.autograd.forward_ad")


def _rand(T, *shape, seed=0, dtype="float64"):
    return T.tensor(np.random.default_rng(seed).uniform(0.1, 1.0, shape).astype(dtype))


@pytest.fixture(autouse=True)
def _no_level_left_open(T):
    """A failing test leaves no dual level open for the next (PyTorch's tearDown)."""
    yield
    fwAD = _fwAD(T)
    if T.__name__ == "torch":
        while fwAD._current_level >= 0:
            fwAD.exit_dual_level()
    else:
        fwAD.exit_dual_level()


# --- levels, packing and unpacking (TestAutogradForwardMode) ---

def test_forward_level_cleanup(T):
    """The dual keeps its tangent alive (the very tensor given), and nothing else does: not the level."""
    fwAD = _fwAD(T)
    foo = _rand(T, 2)
    with fwAD.dual_level():
        tangent = _rand(T, 2, seed=1)
        tangent_ref = weakref.ref(tangent)
        dual = fwAD.make_dual(foo, tangent)
        assert fwAD.unpack_dual(dual)[1] is tangent
        del tangent
        gc.collect()
        assert tangent_ref() is not None
        del dual
        gc.collect()
        assert tangent_ref() is None


def test_size_check(T):
    fwAD = _fwAD(T)
    foo, tangent = _rand(T, 2), _rand(T, 3)
    with fwAD.dual_level():
        raises(RuntimeError, "Trying to set a forward gradient that has a different size", fwAD.make_dual, foo,
               tangent)
        dual = fwAD.make_dual(foo, tangent[1:])
        same(fwAD.unpack_dual(dual).tangent, values(tangent)[1:])


def test_default_level(T):
    """The level's tangents are gone once it closes; the primal stays."""
    fwAD = _fwAD(T)
    foo, bar = _rand(T, 2), _rand(T, 2, seed=1)
    with fwAD.dual_level():
        baz = fwAD.make_dual(foo, bar)
        baz_primal, baz_tangent = fwAD.unpack_dual(baz)
    same(baz_primal, values(foo))
    assert baz_tangent is bar
    baz_primal, baz_tangent = fwAD.unpack_dual(baz)
    same(baz_primal, values(foo))
    assert baz_tangent is None


def test_nested_level(T):
    fwAD = _fwAD(T)
    with fwAD.dual_level() as level:
        assert level == 0
    with fwAD.dual_level():
        raises(RuntimeError, "Nested forward mode AD is not supported at the moment", fwAD.enter_dual_level)


def test_enter_and_exit_dual_level_by_hand(T):
    fwAD = _fwAD(T)
    level = fwAD.enter_dual_level()
    assert level == 0
    dual = fwAD.make_dual(T.tensor([1.0, 2.0]), T.tensor([3.0, 4.0]))
    same(fwAD.unpack_dual(dual * 2).tangent, [6.0, 8.0])
    fwAD.exit_dual_level()
    assert fwAD.unpack_dual(dual).tangent is None
    raises(RuntimeError, "no level exists", fwAD.make_dual, T.tensor([1.0]), T.tensor([1.0]))


def test_set_fw_grad_having_own_fw_grad_at_same_level(T):
    """A tangent may not itself carry a tangent at the same level (tangents carry none)."""
    fwAD = _fwAD(T)
    foo, bar, baz = _rand(T, 2), _rand(T, 2, seed=1), _rand(T, 2, seed=2)
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, bar)
        raises(RuntimeError, "has a forward gradient at the same level", fwAD.make_dual, baz, dual)


def test_make_dual_forbid_integral_dtype(T):
    fwAD = _fwAD(T)
    primal_f, primal_l = T.ones(2, 2, dtype=T.float32), T.ones(2, 2, dtype=T.int64)
    tangent_f, tangent_l = T.ones(2, 2, dtype=T.float32), T.ones(2, 2, dtype=T.int64)
    with fwAD.dual_level():
        raises(ValueError, "Expected tangent to be floating point or complex", fwAD.make_dual, primal_f, tangent_l)
        raises(ValueError, "Expected primal to be floating point or complex", fwAD.make_dual, primal_l, tangent_l)
        raises(ValueError, "Expected primal to be floating point or complex", fwAD.make_dual, primal_l, tangent_f)


def test_make_dual_keeps_the_tangent_as_given(T):
    """The tangent keeps its own dtype (the very tensor comes back); an op's tangent has its output's dtype."""
    fwAD = _fwAD(T)
    tangent = T.tensor([0.5, 0.25], dtype=T.float32)
    with fwAD.dual_level():
        dual = fwAD.make_dual(T.tensor([1.0, 2.0], dtype=T.float64), tangent)
        assert fwAD.unpack_dual(dual).tangent is tangent
        doubled, exp = fwAD.unpack_dual(dual * 2).tangent, fwAD.unpack_dual(dual.exp()).tangent
        z = fwAD.make_dual(T.tensor([1.0 + 1.0j, 2.0], dtype=T.complex128), T.tensor([1.0, 2.0], dtype=T.float64))
        rotated = fwAD.unpack_dual(z * 1j).tangent
    assert doubled.dtype == T.float64 and exp.dtype == T.float64
    same(doubled, [1.0, 0.5])
    close(exp, np.exp([1.0, 2.0]) * [0.5, 0.25], rtol=1e-7)
    assert rotated.dtype == T.complex128
    same(rotated, [1j, 2j])


def test_print(T):
    fwAD = _fwAD(T)
    with fwAD.dual_level():
        a = _rand(T, 3)
        assert "tangent=" not in str(a)
        b = fwAD.make_dual(a, _rand(T, 3, seed=1))
        assert "tangent=" not in str(a)
        assert "tangent=" in str(b)
        b_primal, b_tangent = fwAD.unpack_dual(b)
        assert "tangent=" not in str(b_primal)
        assert "tangent=" not in str(b_tangent)


def test_basic_packing_unpacking(T):
    fwAD = _fwAD(T)
    foo, bar = _rand(T, 2), _rand(T, 2, seed=1)
    with fwAD.dual_level():
        baz = fwAD.make_dual(foo, bar)
        baz_primal, baz_tangent = fwAD.unpack_dual(baz)
        same(baz_primal, values(foo))
        assert baz_tangent is bar
        unpacked = fwAD.unpack_dual(baz)  # a named tuple, and a new view of the primal each time
        assert isinstance(unpacked, tuple) and unpacked._fields == ("primal", "tangent")
        assert unpacked.primal is not baz_primal
        same(unpacked.primal, values(foo))
        assert unpacked.tangent is bar
        foo_primal, foo_tangent = fwAD.unpack_dual(foo)  # (packing left the input as it was)
        same(foo_primal, values(foo))
        assert foo_tangent is None


def test_packing_shares_memory_and_version_counter(T):
    fwAD = _fwAD(T)
    foo, bar = _rand(T, 2), T.ones(2)
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, bar)
        assert dual.untyped_storage().data_ptr() == foo.untyped_storage().data_ptr()
        assert foo._version == dual._version
        foo.add_(1)
        assert foo._version == dual._version
        same(dual, values(foo))
        dual_primal, dual_tangent = fwAD.unpack_dual(dual)
        assert dual_primal.untyped_storage().data_ptr() == foo.untyped_storage().data_ptr()
        assert dual_tangent.untyped_storage().data_ptr() == bar.untyped_storage().data_ptr()
        assert dual_tangent is bar
        assert foo._version == dual_primal._version
        foo.add_(1)
        assert foo._version == dual_primal._version
        same(dual_primal, values(foo))
        assert bar._version == dual_tangent._version
        bar.add_(1)
        assert bar._version == dual_tangent._version


def test_packing_unpacking_is_differentiable_in_reverse_mode(T):
    """Backward gradients pass through make_dual and unpack_dual: the primal's to the primal, the tangent's
    (the tangent tensor itself) to the tangent."""
    fwAD = _fwAD(T)
    foo = _rand(T, 2).requires_grad_()
    bar = T.ones(2, dtype=T.float64).requires_grad_()
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, bar)
        p, t = fwAD.unpack_dual(dual)
        gfoo, gbar = T.autograd.grad(p.sum(), (foo, bar), retain_graph=True, allow_unused=True)
        same(gfoo, [1.0, 1.0])
        assert gbar is None
        gfoo, gbar = T.autograd.grad(t.sum(), (foo, bar), retain_graph=True, allow_unused=True)
        assert gfoo is None
        same(gbar, [1.0, 1.0])


def test_detach_drops_the_tangent_and_no_grad_keeps_it(T):
    fwAD = _fwAD(T)
    foo = _rand(T, 2).requires_grad_()
    bar = T.ones(2, dtype=T.float64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, bar)
        p, t = fwAD.unpack_dual(dual.detach() * 2)
        assert not p.requires_grad
        same(p, values(foo) * 2)
        assert t is None
        with T.no_grad():  # (forward gradients do not depend on grad mode)
            out = dual * 3
        p, t = fwAD.unpack_dual(out)
        assert not p.requires_grad and not t.requires_grad
        same(p, values(foo) * 3)
        same(t, [3.0, 3.0])


def test_inplace_detach_drops_the_tangent(T):
    fwAD = _fwAD(T)
    foo = _rand(T, 2).requires_grad_()
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, T.ones(2, dtype=T.float64)).clone()
        dual.detach_()
        p, t = fwAD.unpack_dual(dual * 2)
        assert not p.requires_grad
        same(p, values(foo) * 2)
        assert t is None


def test_view_inplace_non_differentiable_views(T):
    """make_dual's view and unpack_dual's primal are views that do not carry the tangent: an in-place op on the
    dual updates its tangent, in place, but leaves the tensor it was made from without one; one on the unpacked
    primal (or on the tangent) changes the dual's primal (or tangent) alone."""
    fwAD = _fwAD(T)
    original_foo, original_bar = values(_rand(T, 2)), np.ones(2)
    foo, bar = T.tensor(original_foo.copy()), T.tensor(original_bar.copy())
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, bar)
        dual *= 2
        assert fwAD.unpack_dual(foo)[1] is None
        same(fwAD.unpack_dual(dual)[1], original_bar * 2)
        same(foo, original_foo * 2)
        same(fwAD.unpack_dual(dual)[0], original_foo * 2)
        dual_primal, dual_tangent = fwAD.unpack_dual(dual)
        assert fwAD.unpack_dual(dual_primal)[1] is None
        assert fwAD.unpack_dual(dual_tangent)[1] is None
        dual_primal *= 2
        same(fwAD.unpack_dual(dual)[0], original_foo * 4)
        same(fwAD.unpack_dual(dual)[1], original_bar * 2)
        dual_tangent *= 2
        same(fwAD.unpack_dual(dual)[0], original_foo * 4)
        same(fwAD.unpack_dual(dual)[1], original_bar * 4)


def test_in_place_op_updates_the_tangent_tensor_in_place(T):
    """An in-place op on a dual updates its tangent in place: the tensor given to make_dual changes with it."""
    fwAD = _fwAD(T)
    bar = T.ones(2, dtype=T.float64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(_rand(T, 2), bar)
        version = bar._version
        dual *= 2
        same(bar, [2.0, 2.0])
        assert bar._version > version
        assert fwAD.unpack_dual(dual).tangent is bar
        dual.add_(fwAD.make_dual(T.ones(2, dtype=T.float64), T.tensor([1.0, -1.0], dtype=T.float64)))
        same(bar, [3.0, 1.0])


@xfail_ours("an in-place write into a view of a dual tensor is refused (NotImplementedError): its base's "
            "tangent would not follow")
def test_view_inplace_on_a_differentiable_view_updates_the_base(T):
    fwAD = _fwAD(T)
    foo, bar = _rand(T, 2), T.ones(2, dtype=T.float64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, bar)
        view = dual.narrow(0, 0, 1)
        view *= 2
        assert fwAD.unpack_dual(foo)[1] is None
        same(fwAD.unpack_dual(dual)[1], [2.0, 1.0])
        same(fwAD.unpack_dual(view)[1], [2.0])


def test_inplace_writes_of_a_dual_into_a_plain_tensor(T):
    """A plain tensor written in place with a dual gets a tangent: whole (baz += dual) or at an index, the rest of
    its tangent zeros; a detached view of it is a different tensor for forward mode: its base gets none."""
    fwAD = _fwAD(T)
    with fwAD.dual_level():
        dual = fwAD.make_dual(_rand(T, 2), T.tensor([2.0, 1.0], dtype=T.float64))
        baz = _rand(T, 2, seed=1)
        baz += dual
        same(fwAD.unpack_dual(baz)[1], [2.0, 1.0])
        baz = _rand(T, 2, seed=1)
        baz[0] = dual[0]
        same(fwAD.unpack_dual(baz)[1], [2.0, 0.0])
        baz = _rand(T, 2, seed=1)
        view = baz.detach()
        view += dual
        assert fwAD.unpack_dual(baz)[1] is None
        same(baz, values(_rand(T, 2, seed=1)) + values(_rand(T, 2)))


def _dual_written_into_a_transposed_view(T, op):
    fwAD = _fwAD(T)
    base = T.tensor([[1.0, 2.0], [3.0, 4.0]])
    view = base.transpose(0, 1)
    dual = fwAD.make_dual(T.tensor([[1.0, 1.0], [2.0, 2.0]]), T.tensor([[1.0, 2.0], [3.0, 4.0]]))
    getattr(view, op)(dual)
    return base, view


# op: (the base's value, its tangent) after view.op_(dual), with view = base.t(), dual = (d, ḋ):
# the view's tangent is ḋ for add_ and copy_, and ḋ ⊙ view for mul_, written through the view into the base's
WRITTEN_THROUGH_A_VIEW = {"add_": ([[2.0, 4.0], [4.0, 6.0]], [[1.0, 3.0], [2.0, 4.0]]),
                          "mul_": ([[1.0, 4.0], [3.0, 8.0]], [[1.0, 6.0], [6.0, 16.0]]),
                          "copy_": ([[1.0, 2.0], [1.0, 2.0]], [[1.0, 3.0], [2.0, 4.0]])}


@pytest.mark.parametrize("op", list(WRITTEN_THROUGH_A_VIEW))
def test_dual_written_into_a_view_gives_the_base_a_tangent(T, op):
    """Writing a dual into a (transposed) view of a plain tensor gives the base a tangent: what is computed from
    the base afterwards carries it."""
    fwAD = _fwAD(T)
    value, tangent = WRITTEN_THROUGH_A_VIEW[op]
    with fwAD.dual_level():
        base, view = _dual_written_into_a_transposed_view(T, op)
        p, t = fwAD.unpack_dual(base)
        total = fwAD.unpack_dual(base.sum()).tangent
        same(fwAD.unpack_dual(view).tangent, np.array(tangent).T)
    same(p, value)
    same(t, tangent)
    same(total, np.sum(tangent))


@pytest.mark.parametrize("op", list(WRITTEN_THROUGH_A_VIEW))
def test_view_inplace_always_creates_a_view(T, op):
    """After the write, the view's tangent is a view of the base's: a later in-place op on the view scales both."""
    fwAD = _fwAD(T)
    value, tangent = WRITTEN_THROUGH_A_VIEW[op]
    with fwAD.dual_level():
        base, view = _dual_written_into_a_transposed_view(T, op)
        view *= 2
        p, t = fwAD.unpack_dual(base)
    same(p, np.array(value) * 2)
    same(t, np.array(tangent) * 2)


def test_grad_cleanup(T):
    fwAD = _fwAD(T)
    foo, bar, baz = _rand(T, 2), _rand(T, 2, seed=1), _rand(T, 2, seed=2)
    with fwAD.dual_level():
        dual = fwAD.make_dual(foo, bar)
        assert fwAD.unpack_dual(foo)[1] is None
        assert fwAD.unpack_dual(dual)[1] is bar
    assert fwAD.unpack_dual(dual)[1] is None
    with fwAD.dual_level():  # (a new level: the old one's tangents do not come back)
        assert fwAD.unpack_dual(foo)[1] is None
        new_dual = fwAD.make_dual(foo, baz)
        dual_primal, dual_tangent = fwAD.unpack_dual(dual)
        new_dual_primal, new_dual_tangent = fwAD.unpack_dual(new_dual)
        same(dual_primal, values(new_dual_primal))
        assert dual_tangent is None
        same(new_dual_tangent, values(baz))


def test_detach_view_tracking(T):
    """A detached view does not keep the tensor it was detached from alive."""
    foo = _rand(T, 2)
    foo_ref = weakref.ref(foo)
    out = foo.detach()
    del foo
    gc.collect()
    assert foo_ref() is None
    same(out.shape, [2])


def test_out_variant(T):
    fwAD = _fwAD(T)
    with fwAD.dual_level():
        foo = fwAD.make_dual(_rand(T, 2), _rand(T, 2, seed=1))
        bar = _rand(T, 2, seed=2)
        raises(NotImplementedError, "Trying to use forward AD with .* out= function", T.add, bar, bar, out=foo)
        raises(NotImplementedError, "Trying to use forward AD with .* out= function", T.add, foo, bar, out=bar)
        raises(NotImplementedError, "out= function", T.max, foo, 0,
               out=(T.empty(0, dtype=T.float64), T.empty(0, dtype=T.int64)))
        plain = T.empty(2, dtype=T.float64)  # (out= with no tangent involved still works inside the level)
        T.add(bar, bar, out=plain)
        same(plain, values(bar) * 2)


def test_non_differentiable(T):
    """Comparisons of a dual tensor have no tangent and raise nothing, in place as well."""
    fwAD = _fwAD(T)
    with fwAD.dual_level():
        foo = fwAD.make_dual(T.tensor([1.0, 2.0]), T.tensor([1.0, 1.0]))
        bar = T.tensor([1.0, 3.0])
        eq = foo == bar
        same(eq, [True, False])
        assert fwAD.unpack_dual(eq).tangent is None
        foo.eq_(bar)
        same(foo, [1.0, 0.0])


def test_backward_graph_destruction(T):
    """A dual whose tangent requires grad, through exp: the level closes cleanly, and the tangent is e^x ẋ."""
    fwAD = _fwAD(T)
    a = _rand(T, 10).requires_grad_()
    primal = _rand(T, 10, seed=1)
    with fwAD.dual_level():
        da = fwAD.make_dual(primal, a)
        db = da.exp()
        tangent = fwAD.unpack_dual(db).tangent
    close(tangent, np.exp(values(primal)) * values(a), rtol=1e-12)


def test_make_dual_in_inference_mode(T):
    """Inside inference mode make_dual still works, and an in-place op on the dual writes into the tensor it was
    made from."""
    fwAD = _fwAD(T)
    with T.inference_mode():
        foo, bar = T.tensor([1.0, 2.0]), T.tensor([1.0, 1.0])
        with fwAD.dual_level():
            dual = fwAD.make_dual(foo, bar)
            dual += 1
            same(foo, [2.0, 3.0])


def test_dual_of_a_conjugate_view(T):
    """A complex primal (a conjugate) with a tangent: slicing the dual slices both."""
    fwAD = _fwAD(T)
    z = np.array([[1 + 2j, 3 - 1j], [0.5j, -2.0]])
    dz = np.array([[1j, 1.0], [2.0, -1j]])
    with fwAD.dual_level():
        dual = fwAD.make_dual(T.tensor(z).conj(), T.tensor(dz))
        primal, tangent = fwAD.unpack_dual(dual[1:])
        real_tangent = fwAD.unpack_dual(T.real(dual)).tangent
        imag_tangent = fwAD.unpack_dual(T.imag(dual)).tangent
    same(primal, z.conj()[1:])
    same(tangent, dz[1:])
    same(real_tangent, dz.real)
    same(imag_tangent, dz.imag)


# --- custom Functions in forward mode (TestAutograd's test_custom_function_* forward-mode tests) ---

def test_custom_function_without_jvp_is_refused_in_forward_mode(T):
    fwAD = _fwAD(T)

    class BadJvp(T.autograd.Function):
        @staticmethod
        def forward(ctx, foo):
            return foo.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    inp = _rand(T, 1).requires_grad_()
    with fwAD.dual_level():
        d = fwAD.make_dual(inp, T.ones(1, dtype=T.float64))
        raises(RuntimeError, "must implement the jvp function", BadJvp.apply, d)
    same(BadJvp.apply(inp), values(inp))  # (outside a level the jvp is not needed)


def _view_fn(T):
    class ViewFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, foo, flag):
            ctx.flag = flag
            ctx.size = foo.size()
            return foo.narrow(0, 0, 2)

        @staticmethod
        def vjp(ctx, gO):
            gI = gO.new_zeros(ctx.size)
            gI.narrow(0, 0, 2).copy_(gO)
            return gI, None

        @staticmethod
        def jvp(ctx, gI, _):
            res = gI.narrow(0, 0, 2)
            if ctx.flag != "ok":
                res = res.clone()  # (breaks the view in the tangent)
            if ctx.flag in ["not_a_view_of_inp", "not_a_view_of_inp_base"]:
                res = res.view_as(res)  # (a view, of the wrong tensor)
            return res

    return ViewFn


def test_custom_function_returning_a_view_with_a_jvp_returning_its_view(T):
    ViewFn = _view_fn(T)
    inp = _rand(T, 4, 4).requires_grad_()
    assert T.autograd.gradcheck(lambda x: ViewFn.apply(x, "ok"), (inp,), check_forward_ad=True)
    fwAD = _fwAD(T)
    tangent = T.arange(16.0, dtype=T.float64).reshape(4, 4)
    with fwAD.dual_level():
        out = ViewFn.apply(fwAD.make_dual(inp.detach(), tangent), "ok")
        same(fwAD.unpack_dual(out).tangent, np.arange(8.0).reshape(2, 4))


@xfail_ours("chainrule does not check that a custom Function's jvp returns a view where its forward does "
            "(PyTorch's errors: 'jvp is not returning a view ...')")
@pytest.mark.parametrize("flag, words", [("not_a_view", "jvp is not returning a view"),
                                         ("not_a_view_of_inp", "jvp is not returning a view of the given"),
                                         ("not_a_view_of_inp_base", "jvp is not returning a view of the same base")])
def test_custom_function_forward_mode_view_checks(T, flag, words):
    ViewFn = _view_fn(T)
    inp = _rand(T, 4, 4).requires_grad_()

    def fn(x):
        if flag == "not_a_view_of_inp_base":
            x = x.view_as(x)
        return ViewFn.apply(x, flag)

    raises(RuntimeError, words, T.autograd.gradcheck, fn, (inp,), check_forward_ad=True)


def _inplace_fn(T):
    class InplaceFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, foo, flag):
            ctx.mark_dirty(foo)
            ctx.flag = flag
            foo.mul_(2)
            return foo

        @staticmethod
        def vjp(ctx, gO):
            return 2 * gO, None

        @staticmethod
        def jvp(ctx, gI, _):
            if ctx.flag:
                return 2 * gI  # (not in place)
            gI.mul_(2)
            return gI

    return InplaceFn


def test_custom_function_in_place_with_an_in_place_jvp(T):
    InplaceFn = _inplace_fn(T)
    inp = _rand(T, 4, 4).requires_grad_()
    assert T.autograd.gradcheck(lambda x: InplaceFn.apply(x.clone(), False), (inp,), check_forward_ad=True)
    fwAD = _fwAD(T)
    with fwAD.dual_level():
        dual = fwAD.make_dual(inp.detach().clone(), T.ones(4, 4, dtype=T.float64))
        out = InplaceFn.apply(dual, False)
        assert out is dual
        same(fwAD.unpack_dual(dual).tangent, np.full((4, 4), 2.0))
        close(dual, values(inp) * 2)


@xfail_ours("chainrule does not check that the jvp of a custom Function that modifies its input in place "
            "modifies the tangent in place (PyTorch's error: 'inplace custom Function is not modifying the forward "
            "mode gradients inplace')")
def test_custom_function_forward_mode_inplace_checks(T):
    InplaceFn = _inplace_fn(T)
    inp = _rand(T, 4, 4).requires_grad_()
    raises(RuntimeError, "inplace custom Function is not modifying the forward mode gradients inplace",
           T.autograd.gradcheck, lambda x: InplaceFn.apply(x.clone(), True), (inp,), check_forward_ad=True)


def _inplace_mul(T, jvp_in_place):
    class InplaceMul(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            result = x.mul_(2)
            ctx.mark_dirty(result)
            return result

        @staticmethod
        def backward(ctx, grad_output):
            pass

        @staticmethod
        def jvp(ctx, x_t):
            return x_t.mul_(2) if jvp_in_place else x_t

    return InplaceMul


@pytest.mark.parametrize("requires_grad", [True, False])
def test_custom_function_mark_dirty_not_differentiable(T, requires_grad):
    """A Function that modifies its input in place returns it as is; in forward mode its tangent is the input's
    tangent, modified in place by the jvp."""
    fwAD = _fwAD(T)
    InplaceMul = _inplace_mul(T, jvp_in_place=True)
    z = T.tensor(1.0, requires_grad=requires_grad)
    x = z.clone()
    y = InplaceMul.apply(x)
    assert x is y
    same(x, 2.0)
    with fwAD.dual_level():
        x_tangent = T.ones_like(x)
        x_dual = fwAD.make_dual(x, x_tangent)
        out_dual = InplaceMul.apply(x_dual)
        _, out_tangent = fwAD.unpack_dual(out_dual)
        assert out_dual is x_dual
        assert out_tangent is x_tangent
        same(out_tangent, 2.0)
        same(out_dual, 4.0)


@xfail_ours("chainrule does not check that the jvp of a custom Function that modifies its input in place "
            "modifies the input's tangent in place (PyTorch's error: 'jvp function must modify the corresponding "
            "gradient inplace')")
def test_custom_function_mark_dirty_jvp_must_modify_the_tangent_in_place(T):
    fwAD = _fwAD(T)
    InplaceMul = _inplace_mul(T, jvp_in_place=False)
    with fwAD.dual_level():
        x = T.tensor(1.0).clone()
        x_dual = fwAD.make_dual(x, T.ones_like(x))
        raises(RuntimeError, "jvp function must modify the corresponding gradient inplace", InplaceMul.apply, x_dual)


def _user_fn(T):
    class UserFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, foo, should_fail):
            ctx.should_fail = should_fail
            return foo * 2

        @staticmethod
        def vjp(ctx, gO):
            return 2 * gO, None

        @staticmethod
        def jvp(ctx, gI, _):
            return 3 * gI if ctx.should_fail else 2 * gI

    return UserFn


def test_custom_function_forward_mode_wrong_formula(T):
    UserFn = _user_fn(T)
    inp = _rand(T, 10).requires_grad_()
    assert T.autograd.gradcheck(UserFn.apply, (inp, False), check_forward_ad=True)
    raises(RuntimeError, "mismatch for output 0", T.autograd.gradcheck, UserFn.apply, (inp, True),
           check_forward_ad=True)
    assert not T.autograd.gradcheck(UserFn.apply, (inp, True), check_forward_ad=True, check_backward_ad=False,
                                    raise_exception=False)


def test_gradcheck_names_a_forward_mode_mismatch(T):
    UserFn = _user_fn(T)
    inp = _rand(T, 10).requires_grad_()
    raises(RuntimeError, "Jacobian computed with forward mode mismatch for output 0", T.autograd.gradcheck,
           UserFn.apply, (inp, True), check_forward_ad=True)


def test_custom_function_forward_mode_non_tensor_before_tensor_args(T):
    """The jvp gets None at the non-tensor arguments' places."""
    seen = []

    class MyFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, nt, x, nt2, y):
            return x * 2 + y * 3

        @staticmethod
        def jvp(ctx, nt, x_t, nt2, y_t):
            seen.append((nt, nt2, y_t))
            return x_t * 2 + y_t * 3

    fwAD = _fwAD(T)
    x, t, y = (T.tensor(1.0, dtype=T.float64) for _ in range(3))
    with fwAD.dual_level():
        out = MyFn.apply(1, fwAD.make_dual(x, t), 1, y)
        same(fwAD.unpack_dual(out).tangent, 2.0)
    (nt, nt2, y_t), = seen
    assert nt is None and nt2 is None
    same(y_t, 0.0)  # (a tensor input without a tangent: zeros)
    assert T.autograd.gradcheck(MyFn.apply, (1, x.requires_grad_(True), 1, y.requires_grad_(True)),
                                check_forward_ad=True, check_backward_ad=False, check_batched_grad=False)


def _returns_input_fn(T, tangent_of_the_input):
    class MyFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x + y, x

        @staticmethod
        def vjp(ctx, gO1, gO2):
            return gO1 + gO2, gO1

        @staticmethod
        def jvp(ctx, x_t, y_t):
            return x_t + y_t, tangent_of_the_input(x_t)

    return MyFn


def test_custom_function_forward_returning_an_input_with_a_jvp_view_as(T):
    """A forward that returns an input as-is is a view of it: its jvp returns the tangent's view_as."""
    fwAD = _fwAD(T)
    MyFn = _returns_input_fn(T, lambda x_t: x_t.view_as(x_t))
    a = T.tensor(1.0, dtype=T.float64, requires_grad=True)
    t = T.tensor(1.0, dtype=T.float64)
    b = T.tensor(1.0, dtype=T.float64, requires_grad=True)
    with fwAD.dual_level():
        out1, out2 = MyFn.apply(fwAD.make_dual(a, t), b)
        same(fwAD.unpack_dual(out2).tangent, 1.0)
        same(fwAD.unpack_dual(out1).tangent, 1.0)
    c = T.tensor(1.0, dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(MyFn.apply, (a, c), check_forward_ad=True)


def test_custom_function_jvp_view_as_is_a_view_of_the_input_tangent(T):
    fwAD = _fwAD(T)
    MyFn = _returns_input_fn(T, lambda x_t: x_t.view_as(x_t))
    a = T.tensor(1.0, dtype=T.float64, requires_grad=True)
    t = T.tensor(1.0, dtype=T.float64)
    with fwAD.dual_level():
        _, out2 = MyFn.apply(fwAD.make_dual(a, t), T.tensor(1.0, dtype=T.float64, requires_grad=True))
        assert fwAD.unpack_dual(out2).tangent._base is t


@xfail_ours("chainrule does not check that the jvp of a custom Function whose forward returns an input as-is "
            "returns a view of the input's tangent (PyTorch's error: 'A custom Function's forward is returning a "
            "view (or an input as-is)')")
@pytest.mark.parametrize("jvp_of_the_input", ["self", "mul_by_2"])
def test_custom_function_forward_mode_forward_is_no_op(T, jvp_of_the_input):
    fwAD = _fwAD(T)
    MyFn = _returns_input_fn(T, (lambda x_t: x_t) if jvp_of_the_input == "self" else (lambda x_t: x_t * 2))
    a = T.tensor(1.0, dtype=T.float64, requires_grad=True)
    b = T.tensor(1.0, dtype=T.float64, requires_grad=True)
    words = r"A custom Function's forward is returning a view \(or an input as-is\)"
    with fwAD.dual_level():
        raises(RuntimeError, words, MyFn.apply, fwAD.make_dual(a, T.tensor(1.0, dtype=T.float64)), b)
    raises(RuntimeError, words, T.autograd.gradcheck, MyFn.apply, (a, b), check_forward_ad=True)


def test_custom_function_save_for_forward(T):
    """save_for_forward gives the jvp the saved primals; backward still works inside the level."""
    fwAD = _fwAD(T)

    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, z):
            ctx.save_for_backward(x, y)
            ctx.save_for_forward(x, y)
            ctx.z = z
            ctx.prod = x * y
            return z * ctx.prod

        @staticmethod
        def jvp(ctx, x_t, y_t, _):
            x_p, y_p = ctx.saved_tensors
            return ctx.z * (y_p * x_t + x_p * y_t)

        @staticmethod
        def vjp(ctx, grad_out):
            x, y = ctx.saved_tensors
            return ctx.z * grad_out * y, ctx.z * grad_out * x, None

    a = T.tensor(1.0, requires_grad=True, dtype=T.float64)
    t = T.tensor(1.0, dtype=T.float64)
    b = T.tensor(2.0, requires_grad=True, dtype=T.float64)
    with fwAD.dual_level():
        out = Func.apply(fwAD.make_dual(a, t), b, 4)
        same(fwAD.unpack_dual(out).tangent, 8.0)  # z y ẋ
        out.backward()
    same(a.grad, 8.0)
    same(b.grad, 4.0)
    assert T.autograd.gradcheck(Func.apply, (a, b, 4), check_forward_ad=True)


def test_custom_function_saved_for_backward_only_is_not_seen_by_jvp(T):
    fwAD = _fwAD(T)
    seen = []

    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clone()

        @staticmethod
        def jvp(ctx, x_t):
            seen.append(len(ctx.saved_tensors))
            return x_t

        @staticmethod
        def vjp(ctx, grad_out):
            seen.append(len(ctx.saved_tensors))
            return grad_out

    a = T.tensor(1.0, requires_grad=True, dtype=T.float64)
    with fwAD.dual_level():
        out = Func.apply(fwAD.make_dual(a, T.tensor(3.0, dtype=T.float64)))
        same(fwAD.unpack_dual(out).tangent, 3.0)
        out.backward()
    assert seen == [0, 1]
    same(a.grad, 1.0)
    assert T.autograd.gradcheck(Func.apply, (a,), check_forward_ad=True)


def test_custom_function_forward_mode_non_differentiable_output(T):
    """An output marked non-differentiable gets no tangent (its jvp gives None there)."""
    fwAD = _fwAD(T)
    x, x_tangent, y = T.tensor(2.0), T.tensor(1.0), T.tensor(3.0)

    class Marked(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            out = y.clone()
            ctx.mark_non_differentiable(out)
            return x.clone(), out

        @staticmethod
        def jvp(ctx, x_tangent, y_tangent):
            return x_tangent, None

    with fwAD.dual_level():
        out1, out2 = Marked.apply(fwAD.make_dual(x, x_tangent), y)
        assert fwAD.unpack_dual(out2).tangent is None
        same(fwAD.unpack_dual(out1).tangent, 1.0)


def test_custom_function_jvp_gets_none_for_an_integer_input(T):
    fwAD = _fwAD(T)
    seen = []

    class Unmarked(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x.clone(), y.clone()

        @staticmethod
        def jvp(ctx, x_tangent, y_tangent):
            seen.append(y_tangent)
            return x_tangent, None

    with fwAD.dual_level():
        out1, out2 = Unmarked.apply(fwAD.make_dual(T.tensor(2.0), T.tensor(1.0)), T.tensor(3))
        assert fwAD.unpack_dual(out2).tangent is None
        same(fwAD.unpack_dual(out1).tangent, 1.0)
    assert seen == [None]


def test_custom_function_jvp_of_a_non_differentiable_output_must_be_none(T):
    fwAD = _fwAD(T)

    class FuncWrong(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            out = y.clone()
            ctx.mark_non_differentiable(out)
            return x.clone(), out

        @staticmethod
        def jvp(ctx, x_tangent, y_tangent):
            return x_tangent, x_tangent.clone()

    with fwAD.dual_level():
        x_dual = fwAD.make_dual(T.tensor(2.0), T.tensor(1.0))
        raises(RuntimeError, "You should return None at that position instead", FuncWrong.apply, x_dual,
               T.tensor(3.0))


def test_custom_function_forward_mode_non_tensor_output(T):
    fwAD = _fwAD(T)
    marker = object()

    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone(), marker, x.clone()

        @staticmethod
        def jvp(ctx, x_tangent):
            return x_tangent, None, x_tangent

    with fwAD.dual_level():
        out, middle, out2 = Func.apply(fwAD.make_dual(T.tensor(2.0), T.tensor(1.0)))
        assert middle is marker
        same(fwAD.unpack_dual(out).tangent, 1.0)
        same(fwAD.unpack_dual(out2).tangent, 1.0)


# --- gradcheck in forward mode (TestAutogradForwardModeBatchedGrad, without vmap) ---

@pytest.mark.parametrize("fn", ["sin", "add"])
def test_gradcheck_forward_mode_out_of_place_basic(T, fn):
    a, b = _rand(T, 4, 4).requires_grad_(), _rand(T, 4, 4, seed=1).requires_grad_()
    inputs = (a,) if fn == "sin" else (a, b)
    assert T.autograd.gradcheck(getattr(T, fn), inputs, check_forward_ad=True)
    assert T.autograd.gradcheck(getattr(T, fn), inputs, check_forward_ad=True, check_backward_ad=False,
                                check_undefined_grad=False)


# --- the tangent's memory layout (TestAutogradForwardMode's metadata checks) ---

def test_metadata_check_checks_storage_numel(T):
    """A primal that shows part of its storage: the tangent is copied (so a write into the unpacked tangent leaves
    the given one as it was), and as_strided over the whole storage reads zeros where the tangent has none."""
    fwAD = _fwAD(T)
    primal = T.arange(5.0)[:4].detach()
    assert len(primal.storage()) == 5
    tangent = T.tensor([1.0, 2.0, 3.0, 4.0])
    with fwAD.dual_level():
        dual = fwAD.make_dual(primal, tangent)
        _, unpacked_tangent = fwAD.unpack_dual(dual)
        unpacked_tangent *= 2
        same(tangent, [1.0, 2.0, 3.0, 4.0])
        same(unpacked_tangent, [2.0, 4.0, 6.0, 8.0])
        strided = dual.as_strided((5,), (1,), 0)
        p, t = fwAD.unpack_dual(strided)
    same(p, [0.0, 1.0, 2.0, 3.0, 4.0])
    same(t, [2.0, 4.0, 6.0, 8.0, 0.0])


def test_tangent_with_other_strides_is_copied_laid_out_as_the_primal(T):
    fwAD = _fwAD(T)
    tangent = T.arange(4.0).reshape(2, 2).t()
    with fwAD.dual_level():
        kept = fwAD.unpack_dual(fwAD.make_dual(T.zeros(2, 2).t(), tangent)).tangent
        copied = fwAD.unpack_dual(fwAD.make_dual(T.zeros(2, 2), tangent)).tangent
    assert kept is tangent
    assert copied is not tangent
    assert copied.stride() == (2, 1)
    same(copied, [[0.0, 2.0], [1.0, 3.0]])


def test_metadata_check_ignores_size_zero(T):
    fwAD = _fwAD(T)
    a = T.ones(0).as_strided((0, 1), (1, 1), 0)
    b = T.ones(0).as_strided((0, 1), (1, 0), 0)
    with fwAD.dual_level():
        dual = fwAD.make_dual(a, b)
        assert fwAD.unpack_dual(dual).tangent is b
        d = T.diagonal(dual, offset=0)
        assert tuple(d.shape) == (0,)
        assert tuple(fwAD.unpack_dual(d).tangent.shape) == (0,)
    x = T.zeros(0, 1, dtype=T.complex128, requires_grad=True)
    assert T.autograd.gradcheck(lambda t: T.diagonal(t, offset=0), (x,), check_forward_ad=True)


def test_metadata_check_ignore_storage_offset_for_zero_numel_tensor(T):
    fwAD = _fwAD(T)
    a = T.tensor([1.0]).as_strided((0,), (1,), 1)
    b = T.tensor([1.0]).as_strided((0,), (1,), 2)
    with fwAD.dual_level():
        assert fwAD.unpack_dual(fwAD.make_dual(a, b)).tangent is b
    a = T.tensor([1.0]).as_strided((1,), (2,), 0)
    b = T.tensor([3.0]).as_strided((1,), (1,), 0)
    with fwAD.dual_level():
        dual = fwAD.make_dual(a, b)
        same(fwAD.unpack_dual(dual).tangent, [3.0])
        assert tuple(dual[1:].shape) == (0,)


@xfail_ours("chainrule has no lazy conjugate or negative bit (conj() and a conjugate's .imag are new tensors): "
            "a tangent is copied only where its layout differs, so a conjugated primal keeps a plain tangent as is")
def test_metadata_check_check_conj(T):
    """A tangent is kept as given only where it has the primal's conjugate and negative bits."""
    fwAD = _fwAD(T)
    rng = np.random.default_rng(7)
    keys = {"NEITHER": lambda x: x, "CONJ": lambda x: x.conj()}
    for primal_key in keys:
        for tangent_key in keys:
            x = keys[primal_key](T.tensor(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))))
            t = keys[tangent_key](T.tensor(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))))
            with fwAD.dual_level():
                dual = fwAD.make_dual(x, t)
                assert (fwAD.unpack_dual(dual).tangent is t) == (primal_key == tangent_key)
                same(fwAD.unpack_dual(T.real(dual)).tangent, values(t).real)


# --- copy_ in forward mode (TestAutogradDeviceType) ---

def test_copy_forward_ad_broadcasting(T):
    """copy_ from a dual of a shape that broadcasts to self's: self's tangent is the broadcast tangent."""
    fwAD = _fwAD(T)
    primal, tangent = _rand(T, 3, 3), _rand(T, 3, 3, seed=1)
    non_dual = _rand(T, 1, 3, 3, seed=2)
    with fwAD.dual_level():
        non_dual.copy_(fwAD.make_dual(primal, tangent))
        p, t = fwAD.unpack_dual(non_dual)
    same(p, values(primal)[None])
    same(t, values(tangent)[None])


def test_copy_forward_ad_same_layout_copies_grad(T):
    """copy_ copies the tangent too: self's tangent is a tensor of its own, not the dual's."""
    fwAD = _fwAD(T)
    primal, tangent = T.tensor([[3.0], [4.0]]), T.tensor([[5.0], [6.0]])
    with fwAD.dual_level():
        x_dual = fwAD.make_dual(primal, tangent)
        non_dual = T.tensor([[1.0], [2.0]])
        non_dual.copy_(x_dual)
        copied = fwAD.unpack_dual(non_dual).tangent
        assert copied is not tangent
        same(non_dual, [[3.0], [4.0]])
        same(copied, [[5.0], [6.0]])
        tangent.mul_(2)
        same(copied, [[5.0], [6.0]])


# --- gradcheck's forward-mode check (TestAutograd's test_gradcheck_*forward*) ---

def _in_a_dual_level(T):
    """Whether a dual level is open (PyTorch's test reads the private fwAD._current_level)."""
    try:
        _fwAD(T).make_dual(T.zeros(1), T.zeros(1))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("fast_mode", [False, True])
@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("complex128", "float64"), ("complex128", "complex128")])
def test_gradcheck_forward_ad(T, fast_mode, dtypes):
    """gradcheck's forward-mode check passes a right function and catches one whose tangent is off by 10% (for
    real and complex inputs and outputs)."""
    fwAD = _fwAD(T)

    def fn(x, y):
        return x + y, y

    def bad_fn(x, y):
        y_p, y_d = fwAD.unpack_dual(y)
        if y_d is not None:  # (inside gradcheck's dual level)
            y = fwAD.make_dual(y_p, y_d * 1.1)
        return x + y, y

    x = _rand(T, 2, dtype=dtypes[0]).requires_grad_()
    y = _rand(T, 2, seed=1, dtype=dtypes[1]).requires_grad_()
    assert T.autograd.gradcheck(fn, (x, y), check_forward_ad=True, fast_mode=fast_mode)
    raises(RuntimeError, "mismatch for output 0 with respect to input 1", T.autograd.gradcheck, bad_fn, (x, y),
           check_forward_ad=True, fast_mode=fast_mode)
    if dtypes == ("float64", "float64"):
        def basic_mul(x):
            return T.view_as_real(T.resolve_conj(x * 1j))

        assert T.autograd.gradcheck(basic_mul, x, check_forward_ad=True, fast_mode=fast_mode)


def _counting_identity(T, calls):
    class UserFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            calls.append(("forward", x.requires_grad, y.requires_grad))
            return x.clone(), y.clone()

        @staticmethod
        def jvp(ctx, x_t, y_t):
            calls.append(("jvp",))
            return x_t, y_t

    return UserFn


def test_gradcheck_forward_ad_respects_requires_grad(T):
    """One forward-mode pass per element of each input that requires grad (numel 1 here)."""
    calls = []
    UserFn = _counting_identity(T, calls)
    kwargs = dict(check_forward_ad=True, check_undefined_grad=False, check_backward_ad=False,
                  check_batched_grad=False)
    x, y = _rand(T, 1).requires_grad_(), _rand(T, 1, seed=1).requires_grad_()
    assert T.autograd.gradcheck(UserFn.apply, (x, y), **kwargs)
    assert calls.count(("jvp",)) == 2
    calls.clear()
    assert T.autograd.gradcheck(UserFn.apply, (x, _rand(T, 1, seed=1)), **kwargs)
    assert calls.count(("jvp",)) == 1


@xfail_ours("chainrule's gradcheck gives its dual inputs the inputs' requires_grad (the duals are views of them); "
            "PyTorch's forward-mode check runs the function on inputs that do not require grad (the fix is in "
            "autograd/gradcheck.py)")
def test_gradcheck_forward_ad_runs_with_no_requires_grad(T):
    calls = []
    UserFn = _counting_identity(T, calls)
    x, y = _rand(T, 2).requires_grad_(), _rand(T, 2, seed=1).requires_grad_()

    class Recording(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            if _in_a_dual_level(T):
                calls.append(("dual", x.requires_grad, y.requires_grad))
            return UserFn.forward(ctx, x, y)

        jvp = UserFn.jvp

    assert T.autograd.gradcheck(Recording.apply, (x, y), check_forward_ad=True, check_undefined_grad=False,
                                check_backward_ad=False, check_batched_grad=False)
    duals = [c for c in calls if c[0] == "dual"]
    assert duals and all(c == ("dual", False, False) for c in duals)


@pytest.mark.parametrize("fast_mode", [False, True])
def test_gradcheck_check_forward_or_backward_only(T, fast_mode):
    """check_forward_ad runs the jvp, check_backward_ad the vjp, and only those: a failing one raises only when
    checked (a backward failure first)."""
    class UserFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, foo, fwd_bad, bwd_bad):
            ctx.fwd_bad, ctx.bwd_bad = fwd_bad, bwd_bad
            return foo * 2

        @staticmethod
        def vjp(ctx, gO):
            if ctx.bwd_bad:
                raise RuntimeError("FAIL BWD")
            return 2 * gO, None, None

        @staticmethod
        def jvp(ctx, gI, _1, _2):
            if ctx.fwd_bad:
                raise RuntimeError("FAIL FWD")
            return 2 * gI

    x = _rand(T, 2).requires_grad_()
    for check_forward_ad, check_backward_ad, fwd_bad, bwd_bad in itertools.product((True, False), repeat=4):
        run = functools.partial(T.autograd.gradcheck, UserFn.apply, (x, fwd_bad, bwd_bad),
                                check_forward_ad=check_forward_ad, check_backward_ad=check_backward_ad,
                                check_undefined_grad=check_backward_ad, check_batched_grad=False, fast_mode=fast_mode)
        if not check_forward_ad and not check_backward_ad:
            raises(AssertionError, "Expected at least one of", run)
        elif bwd_bad and check_backward_ad:
            raises(RuntimeError, "FAIL BWD", run)
        elif fwd_bad and check_forward_ad:
            raises(RuntimeError, "FAIL FWD", run)
        else:
            assert run()
