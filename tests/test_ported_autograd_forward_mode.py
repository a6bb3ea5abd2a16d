"""Forward-mode AD ported from PyTorch's test/test_autograd.py: the class TestAutogradForwardMode (dual levels,
packing and unpacking dual tensors, in-place writes and views, cleanup at the end of a level), the forward-mode
tests of custom Functions in TestAutograd (jvp, save_for_forward, non-differentiable outputs, the checks gradcheck
makes with check_forward_ad), and TestAutogradForwardModeBatchedGrad's gradcheck without vmap.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`); the tangents are
checked against analytic values. chainrule's own forward-mode tests are in tests/test_forward_ad.py.
"""

import gc
import importlib
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


@xfail_ours("chainrule's Tensor.detach_ keeps the tangent (PyTorch's drops it, as detach does); the fix is in "
            "autograd/tensor.py")
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


@xfail_ours("chainrule's in-place op on a dual tensor gives it a new tangent tensor: the tangent given to "
            "make_dual is not updated in place (PyTorch's is: bar becomes 2 * bar)")
def test_in_place_op_updates_the_tangent_tensor_in_place(T):
    fwAD = _fwAD(T)
    bar = T.ones(2, dtype=T.float64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(_rand(T, 2), bar)
        dual *= 2
        same(bar, [2.0, 2.0])
        assert fwAD.unpack_dual(dual).tangent is bar


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


@xfail_ours("a dual written in place into a view of a plain tensor gives the view a tangent but not its base "
            "(the view/base tangent link is not built)")
@pytest.mark.parametrize("op", ["add_", "mul_", "copy_"])
def test_view_inplace_always_creates_a_view(T, op):
    """Writing a dual into a (transposed) view of a plain tensor gives the base a tangent, and the view's tangent
    is a view of the base's: a later in-place op on the view scales both."""
    fwAD = _fwAD(T)
    rng = np.random.default_rng(4)
    base = T.tensor(rng.standard_normal((2, 2)))
    view = base.transpose(0, 1)
    primal, tangent = T.tensor(rng.standard_normal((2, 2))), T.tensor(rng.standard_normal((2, 2)))
    with fwAD.dual_level():
        dual = fwAD.make_dual(primal, tangent)
        getattr(view, op)(dual)
        p, t = fwAD.unpack_dual(base)
        p_before, t_before = values(p).copy(), values(t).copy()
        view *= 2
        p, t = fwAD.unpack_dual(base)
        close(p, p_before * 2)
        close(t, t_before * 2)


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


@xfail_ours("chainrule's out= functions take a dual tensor (PyTorch refuses: out= functions don't support "
            "automatic differentiation)")
def test_out_variant(T):
    fwAD = _fwAD(T)
    with fwAD.dual_level():
        foo = fwAD.make_dual(_rand(T, 2), _rand(T, 2, seed=1))
        bar = _rand(T, 2, seed=2)
        raises(RuntimeError, "out= function", T.add, bar, bar, out=foo)
        raises(RuntimeError, "out= function", T.add, foo, bar, out=bar)


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


def test_dual_of_a_zero_size_tensor(T):
    fwAD = _fwAD(T)
    with fwAD.dual_level():
        dual = fwAD.make_dual(T.ones(0, 1), T.ones(0, 1))
        d = T.diagonal(dual, offset=0)
        assert tuple(d.shape) == (0,)
        assert tuple(fwAD.unpack_dual(d).tangent.shape) == (0,)
    x = T.zeros(0, 1, dtype=T.complex128, requires_grad=True)
    assert T.autograd.gradcheck(lambda t: T.diagonal(t, offset=0), (x,), check_forward_ad=True)
