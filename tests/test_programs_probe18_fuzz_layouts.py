"""Differential fuzzing of the state around the ops rather than their maths (op values and gradients are fuzzed in
tests/test_ops*.py and tests/test_fuzz*.py): the SAME small random program is built on chainrule and on PyTorch, and
the values, gradients, dtypes and shapes (and the class of any error) must agree (how: tests/probe18_fuzz_common.py).
Layouts: inputs transposed, permuted, sliced with steps, expanded (stride 0), 0-d, with size-0 dims, and the results
of ``.mT``/``.narrow``/``.unfold``/``.diagonal``, fed to a chain of ops and differentiated; chains of view ops keep
PyTorch's strides and storage offsets; layouts refused as PyTorch refuses them; empty and 0-d gradients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn  # noqa: F401  (registers autograd.nn)

from .probe18_fuzz_common import FUZZ, TORCH, agree, gradcheck, values

# -- layouts: the same ops on transposed, strided, expanded, 0-d and empty inputs -----------------------

# each layout makes, from a leaf of ``shape``, a tensor of another layout (and says the leaf's shape)
LAYOUTS = {
    "transpose": ((3, 4), lambda x: x.t()),
    "permute": ((2, 3, 4), lambda x: x.permute(2, 0, 1)),
    "step_slice": ((5, 6), lambda x: x[::2, 1::3]),
    "negative_dims": ((2, 3, 4), lambda x: x.transpose(-1, -3)[1:, ::2]),
    "expand": ((3, 1), lambda x: x.expand(2, 3, 4)),
    "expand_0d": ((), lambda x: x.expand(3, 2)),
    "zero_d": ((), lambda x: x * 1),
    "size_0": ((0, 3), lambda x: x.t()),
    "mT": ((2, 3, 4), lambda x: x.mT),
    "narrow": ((4, 6), lambda x: x.narrow(1, 2, 3)),
    "unfold": ((10,), lambda x: x.unfold(0, 3, 2)),
    "unfold_2d": ((4, 6), lambda x: x.unfold(1, 2, 2)),
    "diagonal": ((3, 4), lambda x: x.diagonal(1)),
    "diagonal_3d": ((2, 3, 4), lambda x: x.diagonal(0, 0, 2)),
    "select_then_t": ((2, 3, 4), lambda x: x[1].t()),
    "unsqueeze_expand": ((4,), lambda x: x.unsqueeze(0).expand(3, 4)),
}

# ops on a tensor of any shape (0-d and size 0 included); each keeps the graph differentiable
LAYOUT_OPS = {
    "exp": lambda T, y: y.exp(),
    "square": lambda T, y: y * y,
    "sum_last": lambda T, y: y.sum(-1) if y.dim() else y.sum(),
    "mean_keep": lambda T, y: y.mean(0, keepdim=True) if y.dim() else y,
    "cumsum": lambda T, y: y.cumsum(0) if y.dim() else y.cumsum(0),
    "softmax": lambda T, y: y.softmax(-1) if y.dim() else y.softmax(0),
    "flip": lambda T, y: y.flip(0) if y.dim() else y,
    "where": lambda T, y: T.where(y > 0, y, y * 0.5),
    "contiguous_view": lambda T, y: y.contiguous().view(-1),
    "reshape": lambda T, y: y.reshape(-1),
    "clone_add": lambda T, y: y.clone() + y,
    "clamp": lambda T, y: y.clamp(-0.5, 0.7),
    "cat_self": lambda T, y: T.cat([y.reshape(-1), y.reshape(-1) * 2]),
    "stack_self": lambda T, y: T.stack([y, y.sin()]),
    "matmul_t": lambda T, y: y @ y.mT if y.dim() >= 2 else y * y,
    "pow_0d": lambda T, y: y ** T.tensor(2.0, dtype=T.float64),
    "to_float32_and_back": lambda T, y: y.float().double(),
}


def _layout_program(layout, op_names, x0):
    shape, make = LAYOUTS[layout]

    def program(T):
        x = T.tensor(x0, dtype=T.float64, requires_grad=True)
        y = make(x)
        for name in op_names:
            y = LAYOUT_OPS[name](T, y)
        loss = (y * y.detach().tanh()).sum()  # (weights bounded whatever y: cos of a large y is ill-conditioned)
        (grad,) = T.autograd.grad(loss, x)
        return y, grad

    def function(x):  # the same program as a function of the leaf, for gradcheck
        y = make(x)
        for name in op_names:
            y = LAYOUT_OPS[name](autograd, y)
        return y

    return program, function, shape


@FUZZ
@given(layout=st.sampled_from(sorted(LAYOUTS)), op_names=st.lists(st.sampled_from(sorted(LAYOUT_OPS)), max_size=3),
       seed=st.integers(0, 2**16))
def test_ops_on_unusual_layouts_match_pytorch(layout, op_names, seed):
    x0 = values(np.random.default_rng(seed), LAYOUTS[layout][0])
    program, function, shape = _layout_program(layout, op_names, x0)
    agree(program)
    if TORCH is None and int(np.prod(shape)) and "to_float32_and_back" not in op_names:  # (float32: not 1e-6 exact)
        gradcheck(function, values(np.random.default_rng(seed), shape))


def test_results_of_views_have_pytorchs_shapes_and_strides():
    """Strides where PyTorch defines them (a view's: they are its base's, read through the view)."""
    x = autograd.arange(24.0).reshape(2, 3, 4)
    assert x.mT.shape == (2, 4, 3) and x.mT.stride() == (12, 1, 4)
    assert x.narrow(2, 1, 2).stride() == (12, 4, 1) and x.narrow(2, 1, 2).storage_offset() == 1
    assert x.reshape(24).unfold(0, 3, 2).shape == (11, 3) and x.reshape(24).unfold(0, 3, 2).stride() == (2, 1)
    assert x.diagonal(0, 1, 2).shape == (2, 3) and x.diagonal(0, 1, 2).stride() == (12, 5)
    assert x[:, ::2, 1::2].stride() == (12, 8, 2) and x[:, ::2, 1::2].storage_offset() == 1
    assert x[:, :1].expand(2, 5, 4).stride() == (12, 0, 1)
    assert autograd.zeros(0, 3).t().shape == (3, 0)
    if TORCH is not None:
        t = TORCH.torch.arange(24.0).reshape(2, 3, 4)
        for make in (lambda x: x.mT, lambda x: x.narrow(2, 1, 2), lambda x: x.diagonal(0, 1, 2),
                     lambda x: x[:, ::2, 1::2], lambda x: x[:, :1].expand(2, 5, 4), lambda x: x[1].t()):
            assert make(x).stride() == make(t).stride() and make(x).storage_offset() == make(t).storage_offset()


# view ops, each with when it applies (sizes, layout): chains of them on a contiguous base
VIEW_OPS = {
    "t": (lambda x: x.dim() == 2, lambda x: x.t()),
    "mT": (lambda x: x.dim() >= 2, lambda x: x.mT),
    "permute": (lambda x: x.dim() >= 2, lambda x: x.permute(*reversed(range(x.dim())))),
    "narrow": (lambda x: x.dim() >= 1 and x.shape[0] > 1, lambda x: x.narrow(0, 1, x.shape[0] - 1)),
    "select_last": (lambda x: x.dim() >= 2 and x.shape[-1] > 0, lambda x: x.select(-1, x.shape[-1] - 1)),
    "step": (lambda x: x.dim() >= 1, lambda x: x[::2]),
    "step_last": (lambda x: x.dim() >= 1, lambda x: x[..., 1::2]),
    "unsqueeze": (lambda x: x.dim() < 4, lambda x: x.unsqueeze(1 if x.dim() else 0)),
    "expand": (lambda x: x.dim() < 4, lambda x: x.unsqueeze(0).expand(2, *x.shape)),
    "diagonal": (lambda x: x.dim() >= 2, lambda x: x.diagonal(0, -2, -1)),
    "unfold": (lambda x: x.dim() >= 1 and x.shape[-1] >= 2, lambda x: x.unfold(-1, 2, 1)),
    "view_flat": (lambda x: x.is_contiguous(), lambda x: x.view(-1)),
    "movedim": (lambda x: x.dim() >= 2, lambda x: x.movedim(0, -1)),
    "squeeze": (lambda x: True, lambda x: x.squeeze()),
    "chunk": (lambda x: x.dim() >= 1 and x.shape[0] >= 2, lambda x: x.chunk(2, 0)[1]),
    "split_last": (lambda x: x.dim() >= 1 and x.shape[-1] >= 2, lambda x: x.split(1, -1)[-1]),
    "unbind": (lambda x: x.dim() >= 2, lambda x: x.unbind(1)[0]),
    "index": (lambda x: x.dim() >= 1 and x.shape[0] >= 1, lambda x: x[-1]),
    "none": (lambda x: True, lambda x: x[..., None]),
    "swapdims": (lambda x: x.dim() >= 3, lambda x: x.swapdims(0, 2)),
}


@FUZZ
@given(shape=st.sampled_from([(4, 6), (2, 3, 4), (6,), (3, 1, 4), (2, 4, 2, 3)]),
       picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=5))
def test_chains_of_views_have_pytorchs_strides_and_offsets(shape, picks):
    """A view of a contiguous base has the strides and storage offset PyTorch defines (those of dims of more than
    one element, of views that are not empty: chainrule reports a size-1 dim's as row-major, and an empty view's),
    and its elements are the base's memory read by them."""
    chain, x = [], autograd.arange(float(np.prod(shape))).reshape(shape)
    for pick in picks:  # (each pick among the view ops that apply to the view so far)
        names = [name for name, (applies, _) in VIEW_OPS.items() if applies(x)]
        chain.append(names[pick % len(names)])
        x = VIEW_OPS[chain[-1]][1](x)

    def program(T):
        x = T.arange(float(np.prod(shape)), dtype=T.float64).reshape(shape)
        for name in chain:
            x = VIEW_OPS[name][1](x)
        if not x.numel():  # (an empty view's steps and offset: PyTorch's are its base's, chainrule's row-major)
            return x, None, None
        return x, tuple(step for step, n in zip(x.stride(), x.shape) if n > 1), x.storage_offset()

    view, steps, offset = agree(program)
    if view[3].size:
        memory = np.arange(float(np.prod(shape)))
        read = np.lib.stride_tricks.as_strided(memory[offset:], view[2],
                                               tuple(8 * s for s in x.stride()), writeable=False)
        np.testing.assert_array_equal(read, view[3])


@pytest.mark.parametrize("program", [
    lambda T: T.zeros(()).sum(1),                      # dim out of range for a 0-d tensor
    lambda T: T.cat([T.zeros(()), T.zeros(())]),      # zero-dimensional tensors cannot be concatenated
    lambda T: T.zeros(0, 3).max(0),                    # a reduction over an empty dim without identity
    lambda T: T.zeros(3).expand(2, 3).add_(1),         # a write into an expanded tensor
    lambda T: T.zeros(()) @ T.zeros(()),               # matmul of 0-d tensors
    lambda T: T.zeros(10).unfold(0, 11, 1),            # a window longer than the dim
    lambda T: T.zeros(3, 4).narrow(1, 3, 2),           # past the end
])
def test_layouts_refused_as_pytorch_refuses_them(program):
    if TORCH is None:
        with pytest.raises((RuntimeError, IndexError, ValueError)):
            program(autograd)
    else:
        agree(program)


def test_a_view_across_a_transposes_dims_is_refused():
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        autograd.zeros(3, 4).t().view(12)


def test_empty_and_zero_d_gradients():
    """Gradients through size-0 dims are zeros of the input's shape; through 0-d tensors, 0-d."""
    def program(T):
        a = T.zeros(3, 0, dtype=T.float64, requires_grad=True)
        b = T.ones(0, 4, dtype=T.float64, requires_grad=True)
        s = T.tensor(0.5, dtype=T.float64, requires_grad=True)
        y = (a @ b).exp().sum() + (s.expand(2, 3) * T.arange(6.0, dtype=T.float64).view(2, 3)).sum()
        return T.autograd.grad(y, [a, b, s])

    ga, gb, gs = agree(program)
    assert ga[2] == (3, 0) and gb[2] == (0, 4) and gs[2] == () and gs[3] == 15.0
