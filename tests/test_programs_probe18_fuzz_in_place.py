"""Differential fuzzing of the state around the ops rather than their maths (op values and gradients are fuzzed in
tests/test_ops*.py and tests/test_fuzz*.py): the SAME small random program is built on chainrule and on PyTorch, and
the values, gradients, dtypes and shapes (and the class of any error) must agree (how: tests/probe18_fuzz_common.py).
In-place ops (``add_``, ``mul_``, ``clamp_``, ``x[idx] = v``, ``x[mask] = v``, ``index_put_`` with ``accumulate``,
``masked_fill_``, ``copy_`` broadcasting and casting, and 30 more hand-picked: scatter, index, put, fill_diagonal,
in-place activations, ``t_``, complex parts) on leaves under ``no_grad``, on non-leaf tensors in a recorded graph and
on views of them, then backward (once or twice) through the base and the view; ``_version`` of a tensor, its view and
its leaf; writes under ``no_grad`` into a graph."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn  # noqa: F401  (registers autograd.nn)

from .probe18_fuzz_common import FUZZ, TORCH, W0, _outcome, _same, agree, gradcheck, values

# -- in-place writes on non-leaf tensors and their views, then backward -----------------------------

INPLACE_STEPS = ["add_", "mul_", "clamp_", "setitem_index", "setitem_mask", "index_put_accumulate",
                 "index_put_overwrite", "masked_fill_", "masked_fill_tensor", "copy_broadcast_float32",
                 "view_t_mul_", "view_diagonal_sub_", "view_narrow_copy_", "view_unfold_add_", "view_then_exp_",
                 "retain_view", "hook_view", "base_sin"]


def _inplace(T, steps, w, v):
    """A program of in-place steps on h (computed from w) and its views; returns what it computed and the
    tensors whose gradients were retained."""
    h = w * 1.5
    retained = []
    for step in steps:
        if step == "add_":
            h.add_(v, alpha=0.5)
        elif step == "mul_":
            h.mul_(v.sin())
        elif step == "clamp_":
            h.clamp_(-0.8, 0.9)
        elif step == "setitem_index":
            h[1, [0, 2]] = v[:2] * 3
        elif step == "setitem_mask":
            h[h > 0.5] = 0.25
        elif step == "index_put_accumulate":
            h.index_put_((T.tensor([0, 2, 0]), T.tensor([1, 1, 1])), v[:3] * w[0, :3], accumulate=True)
        elif step == "index_put_overwrite":
            h.index_put_((T.tensor([2, 0]), T.tensor([3, 0])), v[1:3].exp())
        elif step == "masked_fill_":
            h.masked_fill_(T.tensor([True, False, False, True]), -0.5)
        elif step == "masked_fill_tensor":
            h.masked_fill_(w > 0.3, v[0])
        elif step == "copy_broadcast_float32":
            h[1:].copy_(v.float())  # a float32 source broadcast into float64 rows
        elif step == "view_t_mul_":
            h.t()[1:3, ::2].mul_(w[0, 0])
        elif step == "view_diagonal_sub_":
            h.diagonal(1).sub_(v[:3])
        elif step == "view_narrow_copy_":
            h.narrow(1, 1, 2).copy_(w[:, :1] * v[:2])
        elif step == "view_unfold_add_":
            h[0].unfold(0, 2, 2).add_(v[:2].unsqueeze(0))
        elif step == "view_then_exp_":
            h[:, 3].exp_()
        elif step == "retain_view":
            r = h[1:]
            r.retain_grad()
            retained.append(r)
        elif step == "hook_view":
            h[:, :2].register_hook(lambda g: g * 2)
        elif step == "base_sin":
            h = h.sin()
    return h, retained


def _inplace_program(steps, w0, v0, second_order):
    def program(T):
        w = T.tensor(w0, dtype=T.float64, requires_grad=True)
        v = T.tensor(v0, dtype=T.float64, requires_grad=True)
        h, retained = _inplace(T, steps, w, v)
        loss = (h * h).sum()
        if second_order:  # a penalty on the gradients, differentiated again through the writes
            gw, gv = T.autograd.grad(loss, [w, v], create_graph=True, allow_unused=True, materialize_grads=True)
            loss = loss + (gw ** 2).sum() + (gv ** 3).sum()
        loss.backward()
        return h, w.grad, v.grad, tuple(r.grad for r in retained)

    return program


@FUZZ
@given(steps=st.lists(st.sampled_from(INPLACE_STEPS), min_size=1, max_size=5), seed=st.integers(0, 2**16),
       second_order=st.booleans())
def test_in_place_writes_through_views_match_pytorch(steps, seed, second_order):
    rng = np.random.default_rng(seed)
    w0, v0 = values(rng, (3, 4)), values(rng, 4)
    program = _inplace_program(steps, w0, v0, second_order)
    exact = not {"hook_view", "retain_view", "copy_broadcast_float32"} & set(steps)  # (a hook changes the gradient
    # on purpose; a float32 copy is not exact to finite differences of 1e-6)
    if TORCH is None:
        agree(program)
        if exact:
            gradcheck(lambda w, v: _inplace(autograd, steps, w, v)[0], w0, v0)
            if second_order:
                inputs = tuple(autograd.tensor(a, requires_grad=True) for a in (w0, v0))
                assert autograd.autograd.gradgradcheck(lambda w, v: _inplace(autograd, steps, w, v)[0], inputs,
                                                       atol=1e-5, rtol=1e-4)
        return
    ours, theirs = _outcome(autograd, program)[0], _outcome(TORCH.torch, program)[0]
    if theirs[0] == "error":  # PyTorch refuses it (a value its graph saved was overwritten): so must chainrule,
        # or give PyTorch's answer for what it computed (it may keep a copy where PyTorch keeps a reference)
        assert ours[0] == "error" or isinstance(theirs[1], RuntimeError), theirs[1]
        return
    assert ours[0] == "ok", ours[1]
    _same(ours[1], theirs[1], tolerance=1e-9 if "copy_broadcast_float32" not in steps else 1e-4)


VERSION_STEPS = {
    "add_": lambda T, h: h.add_(1),
    "setitem": lambda T, h: h.__setitem__(0, 1.0),
    "view_mul_": lambda T, h: h[1].mul_(2),
    "mask_setitem": lambda T, h: h.__setitem__(h > 0, 0.5),
    "index_put_": lambda T, h: h.index_put_((T.tensor([0, 1]),), T.tensor(2.0, dtype=T.float64), accumulate=True),
    "zero_": lambda T, h: h.zero_(),
    "copy_": lambda T, h: h.copy_(h.detach() * 2),
    "clamp_": lambda T, h: h.clamp_(-0.5, 0.5),
    "iadd": lambda T, h: h.__iadd__(1),
    "detach_add_": lambda T, h: h.detach().add_(1),
    "data_add_": lambda T, h: h.data.add_(1),
    "masked_fill_": lambda T, h: h.masked_fill_(h > 0, 1.0),
    "fill_diagonal_": lambda T, h: h.fill_diagonal_(0.0),
    "relu_inplace": lambda T, h: T.nn.functional.relu(h, inplace=True),
    "sigmoid_": lambda T, h: h.sigmoid_(),
    "out_into_it": lambda T, h: None if h.requires_grad else T.add(h.detach(), 1, out=h),
}


@FUZZ
@given(steps=st.lists(st.sampled_from(sorted(VERSION_STEPS)), min_size=1, max_size=4), recorded=st.booleans())
def test_versions_of_a_tensor_its_view_and_its_leaf(steps, recorded):
    """``_version`` counts the writes into a memory (a view and its base share it; ``.data`` and ``detach()`` too,
    ``.data``'s writes uncounted), as PyTorch's, which programs and libraries read to detect stale values."""
    def program(T):
        w = T.tensor(W0, requires_grad=recorded)
        h = w * 1 if recorded else w
        view = h[0:2]
        versions = []
        for step in steps:
            VERSION_STEPS[step](T, h)
            versions.append((h._version, view._version, w._version))
        return tuple(versions)

    versions = agree(program)
    counted = [step for step in steps if step not in ("data_add_",) and not (recorded and step == "out_into_it")]
    assert versions[-1][0] == versions[-1][1] == len(counted)  # (the view's is its base's)


def test_in_place_on_leaves_under_no_grad():
    """Optimizer-style writes into leaves: not recorded, the leaf stays a leaf, and its next gradient is
    taken at the new values."""
    def program(T):
        w = T.tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
        with T.no_grad():
            w.add_(1).mul_(2).clamp_(0.5, 3.0)
            w[0] = 5.0
            w[w > 2.5] = -1.0
            w.t()[1].fill_(0.25)
            w.index_put_((T.tensor([2, 2]), T.tensor([0, 0])), T.tensor([1.0, 2.0], dtype=T.float64),
                         accumulate=True)
            w.masked_fill_(T.tensor([False, False, True, False]), 7.0)
        (grad,) = T.autograd.grad((w ** 3).sum(), w)
        return w, grad, w.is_leaf, w.requires_grad, w.grad_fn is None

    w, grad, *flags = agree(program)
    expected = np.clip((np.linspace(-1, 1, 12).reshape(3, 4) + 1) * 2, 0.5, 3.0)
    expected[0] = 5.0
    expected[expected > 2.5] = -1.0
    expected[:, 1] = 0.25
    expected[2, 0] += 3.0
    expected[:, 2] = 7.0
    np.testing.assert_allclose(w[3], expected)
    np.testing.assert_allclose(grad[3], 3 * expected ** 2)
    assert flags == [True, True, True]


@pytest.mark.parametrize("program, expected", [
    (lambda T: T.ones(3, requires_grad=True).add_(1), RuntimeError),                # a leaf that requires grad
    (lambda T: T.ones(3, dtype=T.int64).add_(1.5), RuntimeError),                    # float into int64
    (lambda T: T.zeros(()).add_(T.ones(3)), RuntimeError),                           # 0-d cannot take a (3,)
    (lambda T: T.zeros(3, 1).mul_(T.ones(3, 4)), RuntimeError),                      # no broadcast of the output
    (lambda T: T.zeros(2, 4, dtype=T.bool).copy_(T.tensor([0.0, 0.5, -1.0, 2.0])),  # copy_ casts to bool
     [[False, True, True, True]] * 2),
    (lambda T: T.zeros(3, 4, dtype=T.int32).copy_(T.tensor([[1.7], [-2.7], [0.2]])),  # truncates, broadcasts
     [[1] * 4, [-2] * 4, [0] * 4]),
    (lambda T: T.zeros(3, dtype=T.float16).copy_(T.tensor([1 / 3, 2 / 3, 70000.0], dtype=T.float64)),
     np.array([1 / 3, 2 / 3, np.inf], dtype=np.float16)),
    (lambda T: T.zeros(3, dtype=T.int32).index_put_((T.tensor([0, 0, 2]),), T.tensor([1, 2, 3], dtype=T.int32),
                                                    accumulate=True), [3, 0, 3]),
])
def test_in_place_dtype_and_shape_rules(program, expected):
    result = agree(program, refused=RuntimeError)
    if isinstance(expected, type):
        assert result is None
    else:
        np.testing.assert_array_equal(result[3], np.asarray(expected))


def test_in_place_write_into_float32_copy_of_float64_leaf():
    """copy_ records the cast: dL/dsource is float64 (its own dtype), the copy float32."""
    def program(T):
        src = T.tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
        dst = T.zeros(3, 4, dtype=T.float32)
        dst.copy_(src)
        (grad,) = T.autograd.grad((dst ** 2).sum(), src)
        return dst, grad

    dst, grad = agree(program, tolerance=1e-6)
    assert dst[1] == "float32" and grad[1] == "float64"
    np.testing.assert_allclose(grad[3], 2 * np.linspace(-1, 1, 12).reshape(3, 4).astype(np.float32), rtol=1e-6)


# hand-picked in-place ops through views, each a function of two leaves w (3, 4) and v (3, 4)
IN_PLACE_ON_VIEWS = {
    # (not index_put_ with repeated indices without accumulate: PyTorch leaves it undefined, and its gradient of
    # the values gathers dL/dy once per index, so twice for a row written twice with one value)
    "iadd_at_rows": lambda T, w, v: _set(_h(w), [2, 0], lambda h: h[[2, 0]] + v[:2]),
    "scatter_into_rows": lambda T, w, v: _then(_h(w), lambda h: h[1:].scatter_(
        1, T.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]), v[:2])),
    "scatter_add_into_transpose": lambda T, w, v: _then(_h(w), lambda h: h.t().scatter_add_(
        0, T.tensor([[0, 1, 1], [3, 3, 0], [0, 0, 0], [1, 2, 3]]), v.t())),
    "index_add_into_strided_columns": lambda T, w, v: _then(_h(w), lambda h: h[:, ::2].index_add_(
        1, T.tensor([1, 1]), v[:, :2], alpha=2)),
    "index_copy_into_transpose": lambda T, w, v: _then(_h(w), lambda h: h.t().index_copy_(
        0, T.tensor([3, 0]), v[:2, :3])),
    "index_fill_rows": lambda T, w, v: _then(_h(w), lambda h: h[1:].index_fill_(1, T.tensor([0, 2]), -1.0)),
    "masked_scatter": lambda T, w, v: _then(_h(w), lambda h: h.masked_scatter_(w > 0, v)),
    "put_accumulate": lambda T, w, v: _then(_h(w), lambda h: h.put_(T.tensor([0, 5, 0]), v[0, :3], accumulate=True)),
    "fill_diagonal": lambda T, w, v: _then(_h(w), lambda h: h.fill_diagonal_(3.0)),
    "tril_of_a_block": lambda T, w, v: _then(_h(w), lambda h: h[1:, 1:].tril_()),
    "t_then_row_write": lambda T, w, v: _then(_h(w).t_(), lambda h: h[0].mul_(v[0, :3])),
    "unsqueeze_mul_squeeze": lambda T, w, v: _h(w).unsqueeze_(1).mul_(v.unsqueeze(1)).squeeze_(1),
    "as_strided_window": lambda T, w, v: _then(_h(w), lambda h: h.as_strided((2, 2), (4, 1), 1).mul_(v[0, 0])),
    "unfold_windows": lambda T, w, v: _then(_h(w), lambda h: h.view(-1).unfold(0, 4, 3)[:, 0].mul_(5)),
    "diagonal_of_3d": lambda T, w, v: _then(_h(w).view(3, 2, 2), lambda h: h.diagonal(0, 1, 2).mul_(v[:, :2])),
    "real_part_of_complex": lambda T, w, v: _then(T.complex(w, v), lambda z: z.real.mul_(3)).abs(),
    "view_as_real_write": lambda T, w, v: _then(T.complex(w, v), lambda z: T.view_as_real(z)[..., 1].add_(w)).abs(),
    "broadcast_setitem": lambda T, w, v: _set(_h(w), (slice(None), slice(1, 3)), lambda h: v[:, :1]),
    "ellipsis_none_setitem": lambda T, w, v: _set(_h(w), (Ellipsis, None, 1, slice(None)), lambda h: v[0]),
    "bool_rows_setitem": lambda T, w, v: _set(_h(w), T.tensor([True, False, True]), lambda h: v[1]),
    "0d_index_setitem": lambda T, w, v: _set(_h(w), (T.tensor(2), T.tensor([0, 3])), lambda h: v[0, :2]),
    "addcmul_row": lambda T, w, v: _then(_h(w), lambda h: h[0].addcmul_(w[1], v[2], value=0.5)),
    "lerp_column": lambda T, w, v: _then(_h(w), lambda h: h[:, 0].lerp_(v[:, 1], 0.3)),
    "pow_of_a_transposes_row": lambda T, w, v: _then(_h(w), lambda h: h.t()[1].pow_(2)),
    "relu_inplace_rows": lambda T, w, v: _then(_h(w), lambda h: T.nn.functional.relu(h[1:], inplace=True)),
    "leaky_relu_inplace_transpose": lambda T, w, v: _then(_h(w), lambda h: T.nn.functional.leaky_relu_(h.t(), 0.2)),
    "hardtanh_inplace_strided": lambda T, w, v: _then(_h(w) * 3, lambda h: T.nn.functional.hardtanh(
        h[:, ::2], inplace=True)),
    "elu_inplace": lambda T, w, v: _then(_h(w) * 3, lambda h: T.nn.functional.elu(h, inplace=True)),
    "sub_alpha_row": lambda T, w, v: _then(_h(w), lambda h: h[1].sub_(v[0], alpha=2)),
    "transpose_then_zero": lambda T, w, v: _then(_h(w).view(2, 3, 2).transpose_(0, 2), lambda h: h[0, 1].zero_()),
}


def _h(w):
    return w * 1


def _then(h, write):
    write(h)
    return h


def _set(h, index, value):
    h[index] = value(h)
    return h


@pytest.mark.parametrize("name", sorted(IN_PLACE_ON_VIEWS))
def test_in_place_ops_through_views(name):
    rng = np.random.default_rng(len(name))
    w0, v0 = values(rng, (3, 4)), values(rng, (3, 4))

    def program(T):
        w, v = (T.tensor(a, requires_grad=True) for a in (w0, v0))
        h = IN_PLACE_ON_VIEWS[name](T, w, v)
        return h, T.autograd.grad((h.sin() * h).sum(), [w, v], allow_unused=True)

    agree(program)
    if TORCH is None:
        gradcheck(lambda w, v: IN_PLACE_ON_VIEWS[name](autograd, w, v), w0, v0)


def test_a_view_made_under_no_grad_refuses_a_recorded_write():
    w = autograd.tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
    h = w * 1
    with autograd.no_grad():
        row = h[0]
    with pytest.raises(RuntimeError, match="created in no_grad mode"):
        row.mul_(w[1])
